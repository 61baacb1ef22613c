"""bin/editor --image=PHOTO --align [--face=K]: a photo of any size is aligned, inverted, and the editor's
export pastes the edit back into the photo at its own size; misplaced --align / --face get one clear line.
A small random DCGAN (32 px, z only; the same as tests/test_photos.py's) stands in for the generator."""

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import align as A
from chunkygan_jax.checkpoints import save_generator
from chunkygan_jax.editor.launch import open_session
from chunkygan_jax.errors import ConfigError
from chunkygan_jax.generators.dcgan import DCGAN, DCGANConfig, random_params

from real_photos import grace_hopper, outside_quad


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = DCGANConfig(z_dim=8, channels=(16, 8, 8))
    path = tmp_path_factory.mktemp("dcgan") / "g"
    save_generator(DCGAN(config=cfg, params=random_params(0, cfg)), path)
    return path


def test_editor_aligns_any_photo_and_exports_it_pasted_back(checkpoint, tmp_path):
    photo = A.load_photo(grace_hopper())
    assert photo.shape[0] != photo.shape[1]  # not a square, aligned image
    logged = []
    session = open_session(image=grace_hopper(), align=True, generator=str(checkpoint), segments=2, steps=2,
                           workdir=tmp_path / "work", pca=0, log=logged.append)
    try:
        assert any(f"found in {grace_hopper()}; aligning face 0" in line for line in logged)
        out = session.export("face")
        assert out["files"] == ["face.png", "face_result", "face_pasted.png"] and out["notes"] == []
        pasted = np.asarray(Image.open(tmp_path / "work" / "face_pasted.png").convert("RGB"))
        assert pasted.shape == photo.shape
        quad = np.asarray(session.alignment()[0]["quad"])
        np.testing.assert_allclose(quad, A.find_alignment(photo).quad, atol=2e-3)
        outside = outside_quad(quad, photo.shape[0], photo.shape[1], 1.0)
        np.testing.assert_array_equal(pasted[outside], photo[outside])
        assert np.abs(pasted[~outside].astype(int) - photo[~outside]).mean() > 5
    finally:
        session.close()


def test_align_and_face_are_checked(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--face chooses the face to align; pass --align too"):
        open_session(image=grace_hopper(), face=0, generator=str(checkpoint), workdir=tmp_path)
    with pytest.raises(ConfigError, match="apply to --image"):
        open_session(latents=tmp_path, align=True, workdir=tmp_path)
    with pytest.raises(Exception, match="face=3 asked for"):
        open_session(image=grace_hopper(), align=True, face=3, generator=str(checkpoint), workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()  # refused before the working folder is made
