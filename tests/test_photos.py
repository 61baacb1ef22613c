"""Real photos in, real photos out: bin/invert --align (the aligned projection, pasted.png at the photo's
size, the quad in metrics.json), a photo without a face, an edit pasted back, the identity proxy, and
bin/evaluate (table.json, table.md, scatter.png, resuming per photo x method).

A small random DCGAN (32 px, z only) stands in for the generator where only the plumbing is tested: the
evaluation then has two methods (global and ours in z), and bin/invert --align uses the same settings
as the evaluation's "ours", so it reuses the programs compiled for it.
"""

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from chunkygan_jax import align as A
from chunkygan_jax import io
from chunkygan_jax.errors import ConfigError, ImageError
from chunkygan_jax.evaluate import evaluate
from chunkygan_jax.identity import IdentityModel
from chunkygan_jax.inversion import invert

from real_photos import run_tool, astronaut, grace_hopper, outside_quad

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps=2", "--segments=2"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(astronaut(), folder / "astronaut.png")
    shutil.copy(grace_hopper(), folder / "grace_hopper.jpg")
    return folder


@pytest.fixture(scope="module")
def evaluation(dcgan, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation") / "eval"
    return evaluate(photos, dcgan[0], out, steps=2, segments=2, align=True), out


# ---------------------------------------------------------------------------------------------------
# bin/evaluate


def test_evaluate_writes_table_and_scatter(evaluation):
    table, out = evaluation
    assert table["photos"] == 2 and not table["failed"]
    assert [(r["key"], r["label"], r["segments"]) for r in table["rows"]] == [("global-z", "Z", 1),
                                                                               ("ours-z", "Ours in Z", 2)]
    assert json.loads((out / "table.json").read_text()) == table
    for row in table["rows"]:
        for measure in ("lpips", "identity", "l2"):
            vals = [table["per_photo"][p][row["key"]][measure] for p in ("astronaut.png", "grace_hopper.jpg")]
            assert row[measure]["mean"] == pytest.approx(np.mean(vals), abs=1e-12)
            assert row[measure]["std"] == pytest.approx(np.std(vals), abs=1e-12)
    for photo in ("astronaut.png", "grace_hopper.jpg"):
        folder = out / "images" / photo
        target = io.load_image(folder / "target.png")
        for key in ("global-z", "ours-z"):
            record = json.loads((folder / f"{key}.json").read_text())
            # the measured LPIPS is the objective's own final LPIPS (both VGG at <= 256 px): the measure
            # compares the projection with its own target
            assert record["lpips"] == pytest.approx(record["objective"]["lpips"], abs=1e-4)
            l2 = np.mean(np.square(io.load_image(folder / f"{key}.png") - target))
            assert record["l2"] == pytest.approx(l2, abs=2e-3)  # the PNGs are rounded to 8 bits
            assert 0.0 < record["identity"] < 1.0
        # the target is the photo's aligned face, as align() makes it
        al = A.Alignment.from_json(json.loads((folder / "alignment.json").read_text()))
        assert al.faces_found == 1
    md = (out / "table.md").read_text()
    assert "| Z | 1 | 0 |" in md and "| Ours in Z | 2 | 0 |" in md and "dlib" in md and "ArcFace" in md
    assert len(re.findall(r"\d\.\d{4} ± \d\.\d{4}", md)) == 6  # 2 rows x 3 measures
    with Image.open(out / "scatter.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300
        pixels = np.asarray(im.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 100  # the equal-loss line is drawn


def test_evaluate_resumes_and_refuses_other_settings(evaluation, dcgan, photos):
    _, out = evaluation
    images = out / "images"
    before = {p: p.stat().st_mtime_ns for p in images.rglob("*-z.json")}
    (images / "grace_hopper.jpg" / "ours-z.json").unlink()  # as if the run had stopped there
    proc = run_tool("evaluate", f"--photos={photos}", f"--generator={dcgan[1]}", f"--output_dir={out}", "--align",
                    *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4/4 runs" in proc.stderr and "astronaut.png: done before" in proc.stderr
    after = {p: p.stat().st_mtime_ns for p in images.rglob("*-z.json")}
    redone = sorted(p.relative_to(images).as_posix() for p in after if after[p] != before.get(p))
    assert redone == ["grace_hopper.jpg/ours-z.json"]
    assert json.loads((out / "table.json").read_text())["photos"] == 2
    # other settings in the same folder: one line, exit 2, nothing changed
    proc = run_tool("evaluate", f"--photos={photos}", f"--generator={dcgan[1]}", f"--output_dir={out}", "--align",
                    "--steps=3", "--segments=2")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "other settings (steps)" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in images.rglob("*-z.json")} == after
    # another mask source: refused, naming both
    proc = run_tool("evaluate", f"--photos={photos}", f"--generator={dcgan[1]}", f"--output_dir={out}", "--align",
                    *TINY, "--masks=logits")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "other settings (masks; its masks: segmenter kmeans head" in proc.stderr and "these: logits" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in images.rglob("*-z.json")} == after


def test_evaluate_records_the_mask_source_and_refuses_a_folder_that_predates_it(evaluation, dcgan, photos,
                                                                                 tmp_path):
    table, out = evaluation
    record = table["config"]["masks"]
    assert record["kind"] == "segmenter" and record["head"] == "kmeans" and record["learned"] is True
    assert record["segments"] == 2 and "masks: segmenter kmeans head" in (out / "table.md").read_text()
    # a folder written before the mask source was recorded (its runs may have used logits): refused
    old = json.loads((out / "evaluation.json").read_text())
    del old["masks"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "evaluation.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"other settings \(masks; its masks: not recorded"):
        evaluate(photos, dcgan[0], tmp_path / "old", steps=2, segments=2, align=True)
    with pytest.raises(ConfigError, match="masks must be one of"):
        evaluate(photos, dcgan[0], tmp_path / "new", steps=2, segments=2, masks="kmeans-ish")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_identity_proxy_orders_faces():
    astro, _ = A.align(astronaut(), 64)
    grace, _ = A.align(grace_hopper(), 64)
    blurred = np.asarray(Image.fromarray(astro).filter(ImageFilter.GaussianBlur(1)))
    same, blur, other = IdentityModel().distances(astro, [astro, blurred, grace])
    assert same < 1e-6
    assert 0 < blur < 0.5 * other  # a blurred face is nearer to itself than another person is


# ---------------------------------------------------------------------------------------------------
# bin/invert --align


def test_invert_align_end_to_end(dcgan, tmp_path, evaluation):
    out = tmp_path / "out"
    proc = run_tool("invert", f"--image={astronaut()}", "--align", f"--generator={dcgan[1]}",
                    f"--output_dir={out}", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"1 face found in {astronaut()}; aligning face 0" in proc.stderr
    photo = A.load_photo(astronaut())
    with Image.open(out / "projection.png") as im:
        assert im.size == (32, 32)  # the aligned projection, at the generator's resolution
    pasted = np.asarray(Image.open(out / "pasted.png").convert("RGB"))
    assert pasted.shape == photo.shape == (512, 512, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["alignment"]
    assert record["face"] == 0 and record["faces_found"] == 1 and set(record["landmarks"]) == {
        "eye_left", "eye_right", "mouth_left", "mouth_right"}
    quad = np.array(record["quad"])
    np.testing.assert_allclose(quad, A.find_alignment(photo).quad, atol=2e-3)
    # FFHQ corner order: top-left, bottom-left, bottom-right, top-right
    assert quad[0, 1] < quad[1, 1] and quad[1, 0] < quad[2, 0] and quad[3, 1] < quad[2, 1] and quad[0, 0] < quad[3, 0]
    # pasted.png is the projection warped into the photo; outside the quad the photo is untouched
    projection = np.asarray(Image.open(out / "projection.png").convert("RGB"))
    np.testing.assert_array_equal(pasted, A.paste_back(photo, projection, A.Alignment.from_json(record)))
    outside = outside_quad(quad, 512, 512, 1.0)
    np.testing.assert_array_equal(pasted[outside], photo[outside])
    assert np.abs(pasted[~outside].astype(int) - photo[~outside]).mean() > 5
    saved = json.loads((out / "result" / "result.json").read_text())
    assert saved["alignment"] == record and saved["photo"] == str(astronaut().resolve())
    # bench/photo_figure.py draws this report: photo | aligned target | projection | masks | pasted
    figure = tmp_path / "figure.png"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "photo_figure.py"), str(out), f"--output={figure}",
                           "--size=32"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(figure) as im:
        assert im.size == (5 * 32 + 4 * 4, 32)  # five panels 32 px wide (the photo is square), 4 px gaps


def test_no_face_and_wrong_face_exit_2(tmp_path, dcgan):
    yy, xx = np.mgrid[0:120, 0:160]
    sky = np.stack([xx * 1.5, yy + 60, 200 + 0 * xx], -1).astype(np.uint8)
    Image.fromarray(sky).save(tmp_path / "sky.png")
    proc = run_tool("invert", f"--image={tmp_path / 'sky.png'}", "--align", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 2 and proc.stderr == f"error: no face found in {tmp_path / 'sky.png'}\n"
    proc = run_tool("invert", f"--image={astronaut()}", "--align", "--face=1", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "face=1 asked for, but 1 face was found" in proc.stderr
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="align=True"):
        invert(astronaut(), dcgan[0], face=0)
    with pytest.raises(ImageError, match="no face found in"):
        invert(tmp_path / "sky.png", dcgan[0], align=True)


# ---------------------------------------------------------------------------------------------------
# bin/edit on an aligned result


def test_edit_of_an_aligned_result_is_pasted_back(dcgan, tmp_path):
    from chunkygan_jax.editing import SavedEdit, edit_saved_result
    from chunkygan_jax.results import InversionResult, load_result

    g, checkpoint = dcgan
    target, al = A.align(astronaut(), g.resolution, output="float")
    codes = np.asarray(g.initial_codes("z", 2))
    images = np.asarray(g.synthesize(codes, "z"))
    masks = np.zeros((2, 32, 32), np.float32)
    masks[0, :, :16], masks[1, :, 16:] = 1, 1
    result = InversionResult(target=target, composite=(images * masks[..., None]).sum(0), segment_images=images,
                             masks=masks, latents={"codes": codes}, loss_history=np.zeros(1, np.float32),
                             final_losses={}, settings={"space": "z", "generator": str(checkpoint)},
                             alignment=al.to_json(), photo=str(astronaut()))
    result.save(tmp_path / "result")
    np.save(tmp_path / "d.npy", np.full(g.config.z_dim, 3.0, np.float32))
    summary = edit_saved_result(tmp_path / "result", tmp_path / "edit.png",
                                SavedEdit(direction=tmp_path / "d.npy"), output_latents=tmp_path / "edited",
                                paste="projection")
    assert f"pasted into the photo (projection) -> {tmp_path / 'edit_pasted.png'}" in summary
    edit = np.asarray(Image.open(tmp_path / "edit.png").convert("RGB"))
    pasted = np.asarray(Image.open(tmp_path / "edit_pasted.png").convert("RGB"))
    photo = A.load_photo(astronaut())
    # the result keeps the alignment as JSON (the quad rounded to 1/1000 px)
    np.testing.assert_array_equal(pasted, A.paste_back(photo, edit, A.Alignment.from_json(al.to_json())))
    outside = outside_quad(al.quad, 512, 512, 1.0)
    np.testing.assert_array_equal(pasted[outside], photo[outside])
    assert np.abs(pasted[~outside].astype(int) - photo[~outside]).mean() > 5  # the generated face is in
    assert load_result(tmp_path / "edited").alignment == al.to_json()  # a further edit pastes back too
    # by default (the face, 174 px, is larger than the generator's 32 px) the edit's change is pasted as a
    # residual onto the photo: photo + warped (edit - unedited projection)
    summary = edit_saved_result(tmp_path / "result", tmp_path / "res.png", SavedEdit(direction=tmp_path / "d.npy"))
    assert "pasted into the photo (residual)" in summary
    from chunkygan_jax.editing import edit_result
    unedited = io.to_uint8(edit_result(load_result(tmp_path / "result"), g, []).composite)
    residual = np.asarray(Image.open(tmp_path / "res_pasted.png").convert("RGB"))
    np.testing.assert_array_equal(residual, A.paste_back(photo, edit, A.Alignment.from_json(al.to_json()),
                                                         reference=unedited))
    np.testing.assert_array_equal(residual[outside], photo[outside])


def test_evaluate_adds_a_tuning_row(dcgan, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(astronaut(), folder / "astronaut.png")
    table = evaluate(folder, dcgan[0], tmp_path / "eval", steps=2, segments=2, align=True, identity=False,
                     tune_steps=3)
    rows = {r["key"]: r for r in table["rows"]}
    assert [r["label"] for r in table["rows"]] == ["Z", "Ours in Z", "Ours in Z + tuning"]
    ours, tuned = (table["per_photo"]["astronaut.png"][k]["lpips"] for k in ("ours-z", "ours-z-tuned"))
    assert tuned < ours  # the same projection (same settings, same seed), then tuned
    assert rows["ours-z-tuned"]["segments"] == 2
