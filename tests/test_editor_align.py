"""bin/editor --image=PHOTO --align [--face=K]: a photo of any size is aligned, inverted, and the editor's
export pastes the edit back into the photo at its own size (a residual by default: nothing edited gives the
photo back bit for bit; paste="projection" pastes the projection), a greyscale photo's images in grey;
misplaced --align / --face / --paste get one clear line.
A small random DCGAN (32 px, z only; tests/test_photos.py's with larger first and last weights) stands in
for the generator."""

import dataclasses
from io import BytesIO

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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = DCGANConfig(z_dim=8, channels=(16, 8, 8))
    path = tmp_path_factory.mktemp("dcgan") / "g"
    params = random_params(0, cfg)  # its first and last weights scaled up: the images, and a direction's
    params["main"]["0"]["weight"] = params["main"]["0"]["weight"] * 50  # change of them, are then far from flat
    params["main"]["9"]["weight"] = params["main"]["9"]["weight"] * 30
    save_generator(DCGAN(config=cfg, params=params), path)
    return path


def test_editor_aligns_any_photo_and_exports_it_pasted_back(checkpoint, tmp_path):
    photo = A.load_photo(grace_hopper())
    assert photo.shape[0] != photo.shape[1]  # not a square, aligned image
    logged = []
    (tmp_path / "dirs").mkdir()
    np.save(tmp_path / "dirs" / "d.npy", np.random.RandomState(0).randn(8).astype(np.float32))
    session = open_session(image=grace_hopper(), align=True, generator=str(checkpoint), segments=2, steps=2,
                           workdir=tmp_path / "work", pca=0, directions=tmp_path / "dirs", log=logged.append)
    try:
        assert any(f"found in {grace_hopper()}; aligning face 0" in line for line in logged)
        quad = np.asarray(session.alignment()[0]["quad"])
        np.testing.assert_allclose(quad, A.find_alignment(photo).quad, atol=2e-3)
        assert A.Alignment.from_json(session.alignment()[0]).side > 32  # so the residual paste is the default
        outside = outside_quad(quad, photo.shape[0], photo.shape[1], 1.0)
        pasted = lambda name: np.asarray(Image.open(tmp_path / "work" / f"{name}_pasted.png").convert("RGB"))
        # nothing edited: the residual paste gives the photo back, bit for bit
        out = session.export("face")
        assert out["files"] == ["face.png", "face_result", "face_pasted.png"] and out["notes"] == []
        np.testing.assert_array_equal(pasted("face"), photo)
        # an edit changes the photo inside the quad only
        session.commit({"kind": "direction", "direction": "file:d.npy", "strength": 3.0, "target": "all"})
        session.export("edit")
        edit = pasted("edit")
        assert edit.shape == photo.shape
        np.testing.assert_array_equal(edit[outside], photo[outside])
        assert np.abs(edit[~outside].astype(int) - photo[~outside]).mean() > 1
        # paste="projection" (bin/editor --paste=projection) pastes the edited projection itself
        work2 = tmp_path / "work2"
        work2.mkdir()
        again = EditorSession(session.result, session.generator, workdir=work2, pca=0,
                              directions=tmp_path / "dirs", paste="projection")
        try:
            again.export("face")
            whole = np.asarray(Image.open(work2 / "face_pasted.png").convert("RGB"))
            np.testing.assert_array_equal(whole[outside], photo[outside])
            assert np.abs(whole[~outside].astype(int) - photo[~outside]).mean() > 5
        finally:
            again.close()
        # a greyscale photo (as invert records one): the page's images and every export are grey
        grey_path = tmp_path / "grey.png"
        Image.fromarray(photo).convert("L").save(grey_path)
        grey = A.load_photo(grey_path)
        result = dataclasses.replace(session.result, photo=str(grey_path),
                                     settings={**session.result.settings, "photo_mode": "grey"})
        work3 = tmp_path / "work3"
        work3.mkdir()
        shown = EditorSession(result, session.generator, workdir=work3, pca=0, directions=tmp_path / "dirs")
        try:
            is_grey = lambda a: np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
            assert is_grey(np.asarray(Image.open(BytesIO(shown.image_png("projection"))).convert("RGB")))
            shown.export("face")
            np.testing.assert_array_equal(np.asarray(Image.open(work3 / "face_pasted.png").convert("RGB")), grey)
            shown.commit({"kind": "direction", "direction": "file:d.npy", "strength": 3.0, "target": "all"})
            assert is_grey(np.asarray(Image.open(BytesIO(shown.image_png("current"))).convert("RGB")))
            shown.export("edit")
            edit = np.asarray(Image.open(work3 / "edit_pasted.png").convert("RGB"))
            assert is_grey(edit) and is_grey(np.asarray(Image.open(work3 / "edit.png").convert("RGB")))
            np.testing.assert_array_equal(edit[outside], grey[outside])
            assert np.abs(edit[~outside].astype(int) - grey[~outside]).mean() > 1
        finally:
            shown.close()
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
