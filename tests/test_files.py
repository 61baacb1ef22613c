"""files.py: the one way outputs are written (replace rules, the old version kept until the new one is
complete, early checks, permissions). No JAX: these tests are cheap."""

import json
import os
import stat

import numpy as np
import pytest

from chunkygan_jax import files, io
from chunkygan_jax.errors import ConfigError


def _write_folder(path, names=("a.txt", "b.txt"), overwrite=False, kind="report"):
    with files.atomic_path(path, is_dir=True, overwrite=overwrite, kind=kind) as tmp:
        for name in names:
            (tmp / name).write_text(name)


def test_a_folder_is_replaced_only_when_this_project_wrote_it(tmp_path):
    out = tmp_path / "out"
    _write_folder(out)
    marker = json.loads((out / files.MARKER).read_text())
    assert marker["kind"] == "report" and marker["entries"] == ["a.txt", "b.txt"]
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        _write_folder(out, ("c.txt",))
    _write_folder(out, ("c.txt",), overwrite=True)
    assert sorted(os.listdir(out)) == [files.MARKER, "c.txt"]
    # a user's file put into our folder later makes it foreign: never deleted, even with overwrite
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    with pytest.raises(ConfigError, match=r"refusing to replace .*holiday\.jpg"):
        _write_folder(out, overwrite=True)
    assert (out / "holiday.jpg").read_bytes() == b"\xff\xd8 a photo"
    # a folder without the marker (a user's photo folder), and one of another kind
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not written by chunkygan_jax"):
        _write_folder(photos, overwrite=True)
    (out / "holiday.jpg").unlink()
    with pytest.raises(ConfigError, match="marker says 'report', not 'generator checkpoint'"):
        _write_folder(out, overwrite=True, kind="generator checkpoint")
    # an empty folder is free to use; an input is never replaced
    (tmp_path / "empty").mkdir()
    _write_folder(tmp_path / "empty")
    with pytest.raises(ConfigError, match="holds an input"):
        files.check_writable(out, True, is_dir=True, kind="report", inputs=[out / "c.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out", "photos"]  # no temporaries


def test_files_need_overwrite_and_keep_the_old_version_until_the_new_one_is_complete(tmp_path, monkeypatch):
    png = tmp_path / "photo.png"
    io.save_png(png, np.zeros((4, 4, 3), np.uint8))
    before = png.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        io.save_png(png, np.full((4, 4, 3), 255, np.uint8))
    assert png.read_bytes() == before
    # a failure while the new version is built leaves the old one and no temporary
    with pytest.raises(RuntimeError):
        with files.atomic_path(png, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert png.read_bytes() == before
    out = tmp_path / "out"
    _write_folder(out)
    with pytest.raises(RuntimeError):
        with files.atomic_path(out, is_dir=True, overwrite=True, kind="report") as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("crash")
    assert (out / "a.txt").read_text() == "a.txt"
    # the final rename failing puts the old folder back where it was
    def no_space(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(files.os, "replace", no_space)
        with pytest.raises(OSError):
            _write_folder(out, ("z.txt",), overwrite=True)
    assert sorted(os.listdir(out)) == [files.MARKER, "a.txt", "b.txt"]
    io.save_png(png, np.full((4, 4, 3), 255, np.uint8), overwrite=True)
    assert png.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photo.png"]


def test_unwritable_outputs_are_found_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        files.check_writable(tmp_path / "file", is_dir=True)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        files.check_writable(tmp_path / "file" / "sub" / "out", is_dir=True)
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        files.check_writable(tmp_path, overwrite=True)
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        files.check_folder(tmp_path / "file")
    files.check_writable(tmp_path / "new" / "deeper" / "out", is_dir=True)
    assert not (tmp_path / "new").exists()  # a check creates nothing
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(ConfigError, match="cannot write"):
                files.check_writable(ro / "out", is_dir=True)
        finally:
            ro.chmod(0o755)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        _write_folder(tmp_path / "out", ("a.txt",))
        io.save_png(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint8))
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "out") == 0o777 & ~umask
    assert mode(tmp_path / "x.png") == 0o666 & ~umask
    assert mode(tmp_path / "out" / files.MARKER) == 0o666 & ~umask
