"""Every face of a group photo, inverted together: `FaceGroup` (one result per face, the faces left out
and why, the photo) and its record in a report folder.

A group's report folder holds `group.json` (this module), `pasted.png` (every projection pasted into
the photo) and one face's report per inverted face in `face_K/` (K: the face's number among the faces
found, left to right), whose `result/` is an ordinary saved result. `load_group` reads the record and
the results back; the result folders are found by the face numbers, never by paths read from the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .align import Alignment
from .errors import ChunkyGANError
from .files import read_json_record
from .results import InversionResult, load_result

GROUP_FILE = "group.json"
GROUP_KIND = "face group"
MAX_FACES = 1000  # a record listing more faces than this is not one we wrote


@dataclasses.dataclass
class FaceGroup:
    """results: one per inverted face (each with its `alignment` and `photo`), left to right.
    skipped: the faces found but not inverted, each {"face", "reason"} and its "quad" or "box".
    mode: "rgb" or "grey" (a greyscale photo: projections and pastes are shown in grey)."""
    results: list[InversionResult]
    skipped: list[dict]
    photo: str | None
    photo_size: tuple[int, int]
    mode: str = "rgb"
    faces_found: int = 0

    @property
    def faces(self) -> list[int]:
        return [int(r.alignment["face"]) for r in self.results]

    def alignments(self) -> list[Alignment]:
        return [Alignment.from_json(r.alignment) for r in self.results]


def face_folder(face: int) -> str:
    return f"face_{int(face)}"


def is_group(directory) -> bool:
    return (Path(directory) / GROUP_FILE).is_file()


def group_record(group: FaceGroup) -> dict:
    return {"kind": GROUP_KIND, "photo": group.photo, "photo_size": list(group.photo_size), "mode": group.mode,
            "faces_found": group.faces_found, "faces": group.faces, "skipped": group.skipped}


def write_group_record(group: FaceGroup, directory) -> None:
    (Path(directory) / GROUP_FILE).write_text(json.dumps(group_record(group), indent=2))


def load_group(directory) -> FaceGroup:
    """The group a report folder records, with each face's result loaded from face_K/result."""
    directory = Path(directory)
    record = read_json_record(directory / GROUP_FILE, ChunkyGANError)
    try:
        if record["kind"] != GROUP_KIND:
            raise ValueError(f"kind {record['kind']!r}")
        faces = [int(f) for f in record["faces"]]
        if not 0 < len(faces) <= MAX_FACES or len(set(faces)) != len(faces) or min(faces) < 0:
            raise ValueError("faces must be distinct face numbers")
        size = (int(record["photo_size"][0]), int(record["photo_size"][1]))
        mode = record["mode"]
        if mode not in ("rgb", "grey"):
            raise ValueError(f"mode {mode!r}")
        photo = record["photo"]
        if photo is not None and not isinstance(photo, str):
            raise ValueError("photo must be a path")
        skipped = list(record["skipped"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ChunkyGANError(f"{directory / GROUP_FILE}: not a face group record ({e})") from None
    results = [load_result(directory / face_folder(f) / "result") for f in faces]
    for f, r in zip(faces, results):
        if r.alignment is None or int(r.alignment.get("face", -1)) != f:
            raise ChunkyGANError(f"{directory / face_folder(f)}: its result is not face {f} of the group")
    return FaceGroup(results=results, skipped=skipped, photo=photo, photo_size=size, mode=mode,
                     faces_found=int(record.get("faces_found", len(faces))))
