"""Group photos: every face found (at least dlib's frontal detector's count, faces down to 1/20 of the
photo's longer side), on group photos made of the real portraits with the true face boxes known;
--face=all (one batch, one pasted photo, each face's report), bin/edit on a group, the residual paste
of an edit, and greyscale photos. A small random DCGAN (32 px) stands in for the generator where only
the plumbing is tested."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import align as A
from chunkygan_jax import io as cio
from chunkygan_jax.editing import SavedEdit, edit_saved_result
from chunkygan_jax.errors import ConfigError
from chunkygan_jax.generators.dcgan import DCGAN, DCGANConfig, random_params
from chunkygan_jax.groups import load_group
from chunkygan_jax.report import write_report
from chunkygan_jax.results import InversionResult

from real_photos import run_tool, astronaut, group_photo, outside_quad

# (width, height, face widths as fractions of the longer side, seed)
GROUPS = [(1280, 886, [1 / 20, 1 / 16, 1 / 12, 1 / 20, 1 / 14, 1 / 18], 0),
          (1000, 1500, [1 / 20, 1 / 20, 1 / 20, 1 / 20, 1 / 16], 3),
          (1200, 800, [1 / 20] * 8, 4)]


def matches(box, truth):
    """Index of the true face whose box holds the centre of `box` (None: no face there)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for i, (x0, y0, x1, y1) in enumerate(truth):
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            return i
    return None


@pytest.mark.parametrize("width,height,faces,seed", GROUPS)
def test_every_face_found_at_least_dlibs(width, height, faces, seed):
    dlib = pytest.importorskip("dlib")
    photo, truth = group_photo(width, height, faces, seed)
    found = A.detect_faces(photo)
    hits = [matches(f.box, truth) for f in found]
    assert None not in hits, "a detection where there is no face"
    assert sorted(hits) == list(range(len(truth))), f"found faces {sorted(hits)} of {len(truth)}"
    theirs = {matches((r.left(), r.top(), r.right() + 1, r.bottom() + 1), truth)
              for r in dlib.get_frontal_face_detector()(photo, 1)} - {None}
    assert len(found) >= len(theirs)
    # ordered left to right, each box about the true face's size
    centres = [(f.box[0] + f.box[2]) / 2 for f in found]
    assert centres == sorted(centres)
    for f, i in zip(found, hits):
        assert 0.6 < (f.box[2] - f.box[0]) / (truth[i][2] - truth[i][0]) < 1.6


def test_whole_photo_pass_alone_misses_small_faces():
    # what the tiles are for: the single pass over the whole photo finds fewer of these faces
    photo, truth = group_photo(*GROUPS[0])
    assert len(A.detect_faces(photo, min_face=0.2)) < len(truth) == len(A.detect_faces(photo))
    assert A._tiles(1280, 886, 0.2) == [] and len(A._tiles(1280, 886, 1 / 20)) == 6


def test_single_face_detection_time():
    photo = A.load_photo(astronaut())
    A.find_alignment(photo)
    t = time.perf_counter()
    al = A.find_alignment(photo)
    seconds = time.perf_counter() - t
    assert al.faces_found == 1
    assert seconds < 1.0  # about 0.05 s on a busy 2-core machine; a bound that holds on any CPU


# ---------------------------------------------------------------------------------------------------
# --face=all: one batch, one pasted photo; edits of all faces or some; the residual paste; greyscale

TINY = ["--steps=2", "--segments=2", "--lpips_net=alex", "--lpips_resolution=full"]  # cheap programs


@pytest.fixture(scope="module")
def group(dcgan, tmp_path_factory):
    folder = tmp_path_factory.mktemp("group")
    photo, truth = group_photo(1000, 700, [1 / 20, 1 / 14, 1 / 10, 1 / 16], 7)
    photo = np.repeat(np.asarray(Image.fromarray(photo).convert("L"))[..., None], 3, axis=-1)  # a grey photo
    Image.fromarray(photo[..., 0]).save(folder / "group.png")
    out = folder / "out"
    proc = run_tool("invert", f"--image={folder / 'group.png'}", "--align", "--face=all",
                    f"--generator={dcgan[1]}", f"--output_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 of 4 faces inverted as one batch" in proc.stdout
    return photo, truth, out


def outside_all(quads, h, w, margin=1.0):
    out = np.ones((h, w), bool)
    for q in quads:
        out &= outside_quad(np.asarray(q), h, w, margin)
    return out


def test_face_all_one_batch_one_pasted_photo(group):
    photo, truth, out = group
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batch"] == 4 and metrics["faces_found"] == 4 and metrics["skipped"] == []
    assert [f["face"] for f in metrics["faces"]] == [0, 1, 2, 3] and metrics["mode"] == "grey"
    quads = [np.array(f["quad"]) for f in metrics["faces"]]
    for q, f in zip(quads, sorted(truth, key=lambda b: b[0] + b[2])):  # each quad around its true face
        cx, cy = q.mean(0)
        assert f[0] <= cx <= f[2] and f[1] <= cy <= f[3]
    pasted = np.asarray(Image.open(out / "pasted.png").convert("RGB"))
    assert (pasted == pasted[..., :1]).all()  # a grey photo gets grey faces back
    outside = outside_all(quads, *photo.shape[:2])
    np.testing.assert_array_equal(pasted[outside], photo[outside])  # only the 4 quads change
    for q in quads:
        inside = ~outside_quad(q, *photo.shape[:2], -0.2 * np.hypot(*(q[3] - q[0])))  # well inside
        assert np.abs(pasted[inside].astype(int) - photo[inside]).mean() > 5
    for k in range(4):  # each face's own report, its result an ordinary saved result
        face = json.loads((out / f"face_{k}" / "metrics.json").read_text())
        assert face["alignment"]["face"] == k and face["alignment"]["quad"] == metrics["faces"][k]["quad"]
        assert face["mode"] == "grey" and (out / f"face_{k}" / "result" / "result.json").is_file()
        projection = np.asarray(Image.open(out / f"face_{k}" / "projection.png").convert("RGB"))
        assert (projection == projection[..., :1]).all()
    group_record = load_group(out)
    assert group_record.faces == [0, 1, 2, 3] and group_record.photo_size == (1000, 700)


def test_edit_of_a_group_pastes_the_chosen_faces(group, dcgan, tmp_path):
    photo, _, out = group
    np.save(tmp_path / "d.npy", np.full(dcgan[0].config.z_dim, 3.0, np.float32))
    quads = [np.array(f["quad"]) for f in json.loads((out / "metrics.json").read_text())["faces"]]
    summary = edit_saved_result(out, tmp_path / "some.png", SavedEdit(direction=tmp_path / "d.npy", strength=2),
                                faces="0,2")
    assert "faces 0, 2 pasted (residual)" in summary  # faces larger than 32 px: residual by default
    some = np.asarray(Image.open(tmp_path / "some.png"))
    np.testing.assert_array_equal(some[outside_all([quads[0], quads[2]], *photo.shape[:2])],
                                  photo[outside_all([quads[0], quads[2]], *photo.shape[:2])])
    assert (some != photo).any(-1)[~outside_all([quads[0]], *photo.shape[:2])].sum() > 50
    # a zero-strength edit of every face, pasted as a residual, gives the photo back bit for bit
    edit_saved_result(out, tmp_path / "zero.png", SavedEdit(direction=tmp_path / "d.npy", strength=0))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "zero.png")), photo)
    with pytest.raises(ConfigError, match="face 5 not in this group"):
        edit_saved_result(out, tmp_path / "x.png", SavedEdit(direction=tmp_path / "d.npy"), faces="0,5")
    with pytest.raises(ConfigError, match="--region, --sweep and --output_latents"):
        edit_saved_result(out, tmp_path / "x.png", SavedEdit(direction=tmp_path / "d.npy", sweep="-1:1:3"))


def laplacian_energy(image, inside):
    g = image.astype(np.float64).mean(-1)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float((lap[inside[1:-1, 1:-1]] ** 2).mean())


def test_residual_paste_keeps_the_photos_detail(dcgan):
    g = dcgan[0]
    photo = A.load_photo(astronaut())
    _, al = A.align(photo, g.resolution)
    codes = np.asarray(g.initial_codes("z", 1))
    projection = cio.to_uint8(np.asarray(g.synthesize(codes, "z"))[0])
    edit = projection.astype(int)
    edit[8:24, 8:24] += 40  # an edit that brightens the middle of the face
    edit = np.clip(edit, 0, 255).astype(np.uint8)
    inside = ~outside_quad(al.quad, 512, 512, -0.1 * al.side)
    residual = A.paste_back(photo, edit, al, reference=projection)
    whole = A.paste_back(photo, edit, al)
    ratio_residual = laplacian_energy(residual, inside) / laplacian_energy(photo, inside)
    ratio_projection = laplacian_energy(whole, inside) / laplacian_energy(photo, inside)
    assert ratio_residual >= 0.8 and ratio_projection < 0.5, (ratio_residual, ratio_projection)
    assert np.abs(residual[inside].astype(int) - photo[inside]).mean() > 3  # the edit is in
    np.testing.assert_array_equal(A.paste_back(photo, projection, al, reference=projection), photo)


def test_greyscale_single_face_report(dcgan, tmp_path):
    # bin/invert --align of one face: a result marked grey (as invert marks a photo with equal channels)
    # is written and pasted in grey; outside the quad the photo is untouched
    g, checkpoint = dcgan
    grey = np.asarray(Image.open(astronaut()).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert A.photo_mode(tmp_path / "grey.png") == "grey" and A.photo_mode(astronaut()) == "rgb"
    target, al = A.align(tmp_path / "grey.png", g.resolution, output="float")
    codes = np.asarray(g.initial_codes("z", 2))
    images = np.asarray(g.synthesize(codes, "z"))
    masks = np.zeros((2, 32, 32), np.float32)
    masks[0, :, :16], masks[1, :, 16:] = 1, 1
    result = InversionResult(target=target, composite=(images * masks[..., None]).sum(0), segment_images=images,
                             masks=masks, latents={"codes": codes}, loss_history=np.zeros(1, np.float32),
                             final_losses={}, settings={"space": "z", "generator": str(checkpoint),
                                                        "photo_mode": "grey"},
                             alignment=al.to_json(), photo=str(tmp_path / "grey.png"))
    write_report(result, tmp_path / "out")
    for name in ("projection.png", "pasted.png"):
        img = np.asarray(Image.open(tmp_path / "out" / name).convert("RGB"))
        assert (img == img[..., :1]).all(), name
    assert not (cio.to_uint8(result.composite) == cio.to_uint8(result.composite)[..., :1]).all()  # it was colour
    pasted = np.asarray(Image.open(tmp_path / "out" / "pasted.png").convert("L"))
    outside = outside_quad(al.quad, 512, 512, 1.0)
    np.testing.assert_array_equal(pasted[outside], grey[outside])
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["mode"] == "grey"
    # an edit of it is grey too, written and pasted
    np.save(tmp_path / "d.npy", np.full(g.config.z_dim, 3.0, np.float32))
    edit_saved_result(tmp_path / "out" / "result", tmp_path / "edit.png", SavedEdit(direction=tmp_path / "d.npy"))
    for name in ("edit.png", "edit_pasted.png"):
        img = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert (img == img[..., :1]).all(), name


def test_face_all_refusals_and_too_small_faces(dcgan, tmp_path):
    from chunkygan_jax.errors import ChunkyGANError, ImageError
    from chunkygan_jax.groups import GROUP_FILE
    from chunkygan_jax.inversion import invert

    with pytest.raises(ConfigError, match="face must be a face number, None"):
        invert(astronaut(), dcgan[0], align=True, face="every")
    with pytest.raises(ConfigError, match="pass align=True"):
        invert(astronaut(), dcgan[0], face="all")
    # a 256 px generator and a 128 px photo: the face's square (about 44 px) is under a quarter of 256
    cfg = DCGANConfig(z_dim=4, channels=(4, 4, 4, 4, 4, 4))
    big = DCGAN(config=cfg, params=random_params(0, cfg))
    small = np.asarray(Image.open(astronaut()).resize((128, 128), Image.LANCZOS))
    with pytest.raises(ImageError, match=r"no face to invert among the 1 found \(face 0: the face is \d+ px wide, "
                                         r"under a quarter of the generator's 256 px"):
        invert(small, big, align=True, face="all")
    # a hostile group record: face numbers are numbers, never paths
    (tmp_path / GROUP_FILE).write_text(json.dumps({"kind": "face group", "photo": None, "photo_size": [8, 8],
                                                   "mode": "rgb", "faces": ["../../etc"], "skipped": []}))
    with pytest.raises(ChunkyGANError, match="not a face group record"):
        load_group(tmp_path)
