"""Writing outputs safely, and reading small records: the one home for both.

Every file or folder the project writes goes through `atomic_path`: the content is built under a
temporary sibling name and renamed into place only when complete, so a crash never leaves a half-written
output under the final name. A folder that is replaced is first moved aside and deleted only after the
new one is in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .errors import CheckpointError


def cache_root() -> Path:
    """$CHUNKYGAN_CACHE, else $XDG_CACHE_HOME/chunkygan_jax, else ~/.cache/chunkygan_jax."""
    if os.environ.get("CHUNKYGAN_CACHE"):
        return Path(os.environ["CHUNKYGAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chunkygan_jax"


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (checkpoints can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_json_record(path, error=CheckpointError) -> dict:
    """A JSON record file (a checkpoint's or a segmenter's), or `error` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"corrupt {path}: {e}") from None


def _replace_dir(tmp: Path, target: Path) -> None:
    """Rename the finished folder `tmp` to `target`. An existing `target` is moved aside first and
    deleted only once the new one is in place (a rename cannot replace a non-empty folder)."""
    old = None
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    try:
        os.replace(tmp, target)  # also replaces an empty folder
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def atomic_path(final, *, is_dir: bool = False):
    """Yield a temporary sibling path; move it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            _replace_dir(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
