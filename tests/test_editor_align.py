"""bin/editor --image=PHOTO --align [--face=K]: a photo of any size is aligned, inverted, and the editor's
export pastes the edit back into the photo at its own size (a residual by default: nothing edited gives the
photo back bit for bit; --paste=projection pastes the projection), a greyscale photo's images in grey;
misplaced --align / --face / --paste get one clear line. The tool itself is started once, as a user starts
it, and the session checks run on the result it saved.
A small random DCGAN (32 px, z only; tests/test_photos.py's with larger first and last weights) stands in
for the generator."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import align as A
from chunkygan_jax.checkpoints import save_generator
from chunkygan_jax.editor.launch import open_session
from chunkygan_jax.editor.session import EditorSession
from chunkygan_jax.errors import ConfigError
from chunkygan_jax.generators.dcgan import DCGAN, DCGANConfig, random_params

from real_photos import grace_hopper, outside_quad

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = DCGANConfig(z_dim=8, channels=(16, 8, 8))
    path = tmp_path_factory.mktemp("dcgan") / "g"
    params = random_params(0, cfg)  # its first and last weights scaled up: the images, and a direction's
    params["main"]["0"]["weight"] = params["main"]["0"]["weight"] * 50  # change of them, are then far from flat
    params["main"]["9"]["weight"] = params["main"]["9"]["weight"] * 30
    save_generator(DCGAN(config=cfg, params=params), path)
    return path


@pytest.fixture(scope="module")
def launched(checkpoint, tmp_path_factory):
    """The command line a new user types, driven over HTTP: bin/editor --image=PHOTO --align opens, and an
    export writes the pasted photo (with --paste=projection, so that the flag is seen to arrive: the
    default residual would give the photo back). Returns (its working folder, its stderr, the export's
    files, the pasted photo as downloaded)."""
    work = tmp_path_factory.mktemp("launched") / "work"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "editor"), f"--image={grace_hopper()}", "--align",
                             "--face=0", "--paste=projection", f"--generator={checkpoint}", "--segments=2",
                             "--steps=2", "--pca=0", f"--workdir={work}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"editor: (http://127\.0\.0\.1:\d+)/\?token=([\w-]+)$", line.strip())
            url = m.groups() if m else None
        assert url, proc.stderr.read() if proc.poll() is not None else "no address printed"
        base, token = url
        post = urllib.request.Request(base + "/api/export", data=json.dumps({"name": "face"}).encode(), method="POST",
                                      headers={"X-Editor-Token": token, "Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=120) as resp:
            files = json.loads(resp.read())["files"]
        get = urllib.request.Request(base + "/api/files/face_pasted.png", headers={"X-Editor-Token": token})
        with urllib.request.urlopen(get, timeout=120) as resp:
            pasted = np.asarray(Image.open(BytesIO(resp.read())).convert("RGB"))
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        return work, stderr, files, pasted
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def test_bin_editor_aligns_a_photo_and_exports_it_pasted_back(launched):
    work, stderr, files, pasted = launched
    photo = A.load_photo(grace_hopper())
    assert photo.shape[0] != photo.shape[1]  # not a square, aligned image
    assert f"found in {grace_hopper()}; aligning face 0" in stderr
    assert files == ["face.png", "face_result", "face_pasted.png"]
    assert (work / "face_pasted.png").is_file() and (work / "inversion").is_dir()  # kept: the user's
    quad = np.asarray(A.find_alignment(photo).quad)
    outside = outside_quad(quad, photo.shape[0], photo.shape[1], 1.0)
    assert pasted.shape == photo.shape
    np.testing.assert_array_equal(pasted[outside], photo[outside])
    assert np.abs(pasted[~outside].astype(int) - photo[~outside]).mean() > 5  # the projection itself


def test_exports_paste_a_residual_by_default_and_grey_photos_in_grey(launched, checkpoint, tmp_path):
    """The session over the result bin/editor saved: with the default paste (a residual here: the face is
    larger than the generator's 32 px), nothing edited gives the photo back bit for bit and an edit
    changes it inside the quad only; a greyscale photo's page images and exports are grey."""
    from chunkygan_jax.checkpoints import load_generator
    from chunkygan_jax.results import load_result

    work = launched[0]
    photo = A.load_photo(grace_hopper())
    result, generator = load_result(work / "inversion"), load_generator(checkpoint)
    (tmp_path / "dirs").mkdir()
    np.save(tmp_path / "dirs" / "d.npy", np.random.RandomState(0).randn(8).astype(np.float32))
    quad = np.asarray(result.alignment["quad"])
    np.testing.assert_allclose(quad, A.find_alignment(photo).quad, atol=2e-3)
    assert A.Alignment.from_json(result.alignment).side > 32  # so the residual paste is the default
    outside = outside_quad(quad, photo.shape[0], photo.shape[1], 1.0)
    pasted = lambda folder, name: np.asarray(Image.open(folder / f"{name}_pasted.png").convert("RGB"))
    is_grey = lambda a: np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    grey_path = tmp_path / "grey.png"
    Image.fromarray(photo).convert("L").save(grey_path)
    grey = A.load_photo(grey_path)
    as_grey = dataclasses.replace(result, photo=str(grey_path), settings={**result.settings, "photo_mode": "grey"})
    for name, res, original in (("colour", result, photo), ("grey", as_grey, grey)):
        folder = tmp_path / name
        folder.mkdir()
        session = EditorSession(res, generator, workdir=folder, pca=0, directions=tmp_path / "dirs")
        try:
            out = session.export("face")  # nothing edited: the residual is the photo, bit for bit
            assert out["files"] == ["face.png", "face_result", "face_pasted.png"] and out["notes"] == []
            np.testing.assert_array_equal(pasted(folder, "face"), original)
            session.commit({"kind": "direction", "direction": "file:d.npy", "strength": 3.0, "target": "all"})
            session.export("edit")
            edit = pasted(folder, "edit")
            np.testing.assert_array_equal(edit[outside], original[outside])
            assert np.abs(edit[~outside].astype(int) - original[~outside]).mean() > 1
            shown = [np.asarray(Image.open(BytesIO(session.image_png(k))).convert("RGB")) for k in ("projection",
                                                                                                  "current")]
            shown.append(np.asarray(Image.open(folder / "edit.png").convert("RGB")))
            assert [is_grey(a) for a in shown + [edit]] == [name == "grey"] * 4
        finally:
            session.close()
    with pytest.raises(ConfigError, match="paste must be one of residual, projection"):
        open_session(image=grace_hopper(), align=True, paste="blur", generator=str(checkpoint), workdir=tmp_path)


def test_align_and_face_are_checked(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--face chooses the face to align; pass --align too"):
        open_session(image=grace_hopper(), face=0, generator=str(checkpoint), workdir=tmp_path)
    with pytest.raises(ConfigError, match="apply to --image"):
        open_session(latents=tmp_path, align=True, workdir=tmp_path)
    with pytest.raises(Exception, match="face=3 asked for"):
        open_session(image=grace_hopper(), align=True, face=3, generator=str(checkpoint), workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()  # refused before the working folder is made
