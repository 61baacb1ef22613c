"""Segmenter checkpoints: a folder with `head.npz` and `segmenter.json` (format version, head kind, n,
layers, temperature, fit or training settings, and the identity of the generator it belongs to)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ... import paths
from ...errors import CheckpointError, ConfigError
from ...files import atomic_path, read_json_record
from ...generators.protocol import fingerprint as generator_fingerprint
from ...trees import flatten_tree, unflatten_tree
from .heads import KMeansHead, MLPHead, Segmenter, make_segmenter

FORMAT_VERSION = 1
RECORD_NAME = "segmenter.json"
HEAD_NAME = "head.npz"
SEGMENTER_KIND = "segmenter checkpoint"
HEAD_KINDS = ("kmeans", "mlp")
_HEADS = {"kmeans": KMeansHead, "mlp": MLPHead}


def save_segmenter(segmenter: Segmenter, directory, *, fingerprint: str | None = None, info=None,
                   overwrite: bool = False) -> dict:
    """Write head.npz + segmenter.json into `directory` (atomically: complete or absent). An existing
    non-empty directory is replaced only with overwrite=True, and only if it is a segmenter checkpoint
    this project wrote (files.atomic_path)."""
    head = segmenter.head
    g = segmenter.generator
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "chunkygan_segmenter",
        "head": head.kind,
        "segments": segmenter.segments,
        "layers": list(segmenter.layers),
        "feature_resolution": segmenter.feature_resolution,
        "temperature": float(head.temperature),
        "noise_mode": segmenter.noise_mode,
        "smoothing": segmenter.smoothing,
        "generator": {"sha256": fingerprint or generator_fingerprint(g), "resolution": g.resolution,
                      "segment_space": g.segment_space, "code_shape": list(segmenter.code_shape)},
        **(info or {}),
    }
    directory = Path(directory)
    # Unwritable: refused before writing (CheckpointError); an OSError while writing stays one.
    with atomic_path(directory, is_dir=True, overwrite=overwrite, kind=SEGMENTER_KIND, error=CheckpointError) as tmp:
        with open(tmp / HEAD_NAME, "wb") as f:
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flatten_tree(head.arrays()).items()},
                     code=np.asarray(segmenter.code, np.float32))
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def segmenter_identity(segmenter: Segmenter) -> str:
    """The segmenter's identity: sha256 of its head kind, layers, noise mode, smoothing and head arrays (not of X^S,
    which each inversion moves). Results record it; an edit that recomputes masks checks it."""
    h = hashlib.sha256(json.dumps({"head": segmenter.head.kind, "layers": list(segmenter.layers),
                                   "noise_mode": segmenter.noise_mode, "smoothing": segmenter.smoothing},
                                  sort_keys=True).encode())
    for name, value in sorted(flatten_tree(segmenter.head.arrays()).items()):
        a = np.ascontiguousarray(np.asarray(value, np.float32))
        h.update(f"{name}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_segmenter_record(directory) -> dict:
    path = Path(directory) / RECORD_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a segmenter checkpoint (no {RECORD_NAME})")
    record = read_json_record(path)
    if not isinstance(record, dict) or record.get("kind") != "chunkygan_segmenter":
        raise CheckpointError(f"{path}: not a segmenter record")
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {record.get('format_version')!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    if record.get("head") not in HEAD_KINDS:
        raise CheckpointError(f"{path}: unknown head {record.get('head')!r} (known: {', '.join(HEAD_KINDS)})")
    return record


def load_segmenter(directory, generator, *, frozen=False, fingerprint: str | None = None) -> Segmenter:
    """A saved head on `generator`, which must be the generator it was fitted/trained on (a gs:// or
    s3:// directory is read through a temporary local copy)."""
    if paths.is_remote(directory):
        if not paths.isdir(directory):
            raise CheckpointError(f"{directory}: no segmenter there")
        with paths.local_copy(directory) as local:
            return load_segmenter(local, generator, frozen=frozen, fingerprint=fingerprint)
    directory = Path(directory)
    record = read_segmenter_record(directory)
    want = record.get("generator", {}).get("sha256")
    have = fingerprint or generator_fingerprint(generator)
    if want != have:
        raise CheckpointError(f"{directory}: this segmenter belongs to another generator "
                              f"(sha256 {str(want)[:12]}..., this one is {have[:12]}...)")
    try:
        with np.load(directory / HEAD_NAME, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
        code = flat.pop("code")
        head = _HEADS[record["head"]].from_arrays(unflatten_tree(flat))
        seg = make_segmenter(generator, head, layers=record["layers"], code=code, frozen=frozen,
                             noise_mode=record["noise_mode"], smoothing=record.get("smoothing", 0.0))
    except (OSError, ValueError, KeyError, ConfigError) as e:
        raise CheckpointError(f"{directory}: unreadable segmenter head ({type(e).__name__}: {e})") from None
    if seg.segments != record["segments"]:
        raise CheckpointError(f"{directory}: head has {seg.segments} segments, record says {record['segments']}")
    return seg
