"""Writing outputs safely, and reading small records: the one home for both.

The rules every writer follows (`check_writable`, `atomic_path`):
  - an existing file or folder is replaced only with overwrite=True (--overwrite), and never when it is
    one of the job's inputs or holds one;
  - a folder is replaced only if this project wrote it: every folder written here holds a marker,
    `.chunkygan.json`, naming the kind of output and every entry it was written with. A folder without
    the marker, of another kind, or holding anything the marker does not list (a user's file put there
    later) is refused, and the refusal names the path and the reason;
  - the old version stays intact until the new one is complete: the content is built under a temporary
    sibling name; then the old folder is moved aside, the new one renamed into place, and the old one
    deleted (a file is swapped by one atomic rename);
  - tools call `check_writable` before any long work, so an output that cannot be written is found
    before the optimisation, conversion or training runs;
  - files get mode 0666 and folders 0777, less the umask (temporary files start private).

On an object store (gs://, s3://; paths.py) the same rules hold, the way buckets allow: nothing is
renamed. The content is built in a local temporary folder; then the marker is written first with
"complete": false (the prefix is claimed: a crash leaves a folder this project may replace, never one
that looks finished), every file is uploaded as a whole object, objects of the old version that the
new one lacks are deleted, and the marker is written again, last, with "complete": true. A reader of a
bucket trusts a folder only when its marker says complete (`published`). A file is one whole object.
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

from . import paths
from .errors import CheckpointError, ConfigError

MARKER = ".chunkygan.json"


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


# ------------------------------------------------------------------------------------------ checks
def _written_here(folder: Path, kind: str) -> str | None:
    """None if `folder` is an output of this kind written here; else why it is not."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        listed = set(marker["entries"])
        found = marker["kind"]
    except FileNotFoundError:
        return f"it was not written by chunkygan_jax (no {MARKER})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MARKER} is unreadable"
    if found != kind:
        return f"its marker says '{found}', not '{kind}'"
    foreign = sorted(p.name for p in folder.iterdir() if p.name != MARKER and p.name not in listed)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds files chunkygan_jax did not write ({', '.join(foreign[:3])}{more})"
    return None


def check_writable(path, overwrite: bool = False, *, is_dir: bool = False, kind: str = "output",
                   inputs=(), error=ConfigError) -> Path:
    """Check, before any long work, that `path` can be written under the rules above; raise `error`
    naming the path and the reason otherwise. Creates nothing. `inputs`: files or folders of this job
    that the output must neither be nor contain."""
    if paths.is_remote(path):
        return _check_writable_remote(paths.as_path(path), overwrite, is_dir, kind, inputs, error)
    path = Path(path)
    full = path.resolve()
    for inp in inputs:
        inp = Path(inp).resolve()
        if inp == full or full in inp.parents:
            raise error(f"refusing to write {path}: it {'is' if inp == full else 'holds'} an input ({inp})")
    if path.is_symlink() or path.exists():
        if is_dir and not path.is_dir():
            raise error(f"{path} exists and is not a folder; choose another output folder")
        if not is_dir and path.is_dir():
            raise error(f"{path} is a folder; give a file name")
        if not (is_dir and not path.is_symlink() and not any(path.iterdir())):  # an empty folder is free
            why = _written_here(path, kind) if is_dir else None
            if why:  # said first: --overwrite would not help
                raise error(f"refusing to replace {path}: {why}")
            if not overwrite:
                raise error(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")
    _check_creatable(path, full.parent, error)
    return path


def check_folder(path, *, error=ConfigError) -> Path:
    """Check that `path` is a folder this job can add entries to (existing or creatable): the output
    root of a job that writes many outputs into it, such as a dataset run. Creates nothing."""
    if paths.is_remote(path):
        path = paths.as_path(path)
        if paths.isfile(path):
            raise error(f"{path} exists and is not a folder; choose another output folder")
        _check_bucket(path, error)
        return path
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path} exists and is not a folder; choose another output folder")
    _check_creatable(path, path.resolve() if path.exists() else path.resolve().parent, error)
    return path


def _check_creatable(path: Path, parent: Path, error) -> None:
    """The nearest existing folder at or above `parent` must accept a new entry."""
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise error(f"cannot create {path}: {parent} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".chunkygan-probe-", dir=parent))
    except OSError as e:
        raise error(f"cannot write {path}: {e.strerror or e} ({parent})") from None


# ------------------------------------------------------------------------------------------ writing
def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


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
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()


@contextlib.contextmanager
def atomic_path(final, *, is_dir: bool = False, overwrite: bool = False, kind: str = "output", inputs=(),
                error=ConfigError):
    """Yield a temporary sibling path; move it onto `final` only if the block succeeds, under the rules
    of this module (checked before the block and again before the rename). A folder gets its marker.
    On a bucket the temporary path is local and the result is published as the module says."""
    if paths.is_remote(final):
        with _atomic_remote(paths.as_path(final), is_dir, overwrite, kind, inputs, error) as tmp:
            yield tmp
        return
    final = Path(final)
    check_writable(final, overwrite, is_dir=is_dir, kind=kind, inputs=inputs, error=error)
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
            entries = sorted(p.name for p in tmp.iterdir())
            (tmp / MARKER).write_text(json.dumps({"written_by": "chunkygan_jax", "kind": kind,
                                                  "entries": entries}) + "\n")
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_umask())  # mkdtemp/mkstemp made it private
        check_writable(final, overwrite, is_dir=is_dir, kind=kind, error=error)  # nothing new meanwhile
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


# ------------------------------------------------------------------------------------------ buckets
def _read_marker(url: str) -> dict | None:
    try:
        return json.loads(paths.read_bytes(paths.join(url, MARKER)))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}


def published(url: str, kind: str) -> bool:
    """A folder on a bucket is complete: its marker, written last, says so and names `kind`."""
    marker = _read_marker(url)
    if not marker or marker.get("kind") != kind:
        return False
    if "complete" not in marker:  # built inside a folder that was staged and published as a whole
        up = _read_marker(paths.parent(url))
        return bool(up) and up.get("complete") is True and paths.name(url) in up.get("entries", ())
    return marker["complete"] is True


def _written_here_remote(url: str, kind: str) -> str | None:
    marker = _read_marker(url)
    if marker is None:
        return f"it was not written by chunkygan_jax (no {MARKER})"
    try:
        listed, found = set(marker["entries"]), marker["kind"]
    except (KeyError, TypeError):
        return f"its {MARKER} is unreadable"
    if found != kind:
        return f"its marker says '{found}', not '{kind}'"
    foreign = [n for n in paths.listdir(url) if n != MARKER and n not in listed]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds files chunkygan_jax did not write ({', '.join(foreign[:3])}{more})"
    return None


def _check_bucket(url: str, error) -> None:
    root = f"{url.split('://', 1)[0]}://{paths.bucket(url)}"
    if not paths.exists(root):
        raise error(f"cannot write {url}: the bucket {root} does not exist (or is not visible with these "
                    "credentials)")


def _check_writable_remote(url: str, overwrite: bool, is_dir: bool, kind: str, inputs, error) -> str:
    for inp in inputs:
        if paths.is_under(inp, url):
            raise error(f"refusing to write {url}: it {'is' if paths.as_path(inp) == url else 'holds'} an input "
                        f"({inp})")
    if paths.isfile(url):
        if is_dir:
            raise error(f"{url} exists and is not a folder; choose another output folder")
        if not overwrite:
            raise error(f"{url} already exists; pass --overwrite (overwrite=True) to replace it")
    elif paths.listdir(url):
        if not is_dir:
            raise error(f"{url} is a folder; give a file name")
        why = _written_here_remote(url, kind)
        if why:
            raise error(f"refusing to replace {url}: {why}")
        if not overwrite:
            raise error(f"{url} already exists; pass --overwrite (overwrite=True) to replace it")
    _check_bucket(url, error)
    return url


def _marker_bytes(kind: str, entries, complete: bool) -> bytes:
    return (json.dumps({"written_by": "chunkygan_jax", "kind": kind, "entries": sorted(entries),
                        "complete": complete}) + "\n").encode()


@contextlib.contextmanager
def _atomic_remote(final: str, is_dir: bool, overwrite: bool, kind: str, inputs, error):
    _check_writable_remote(final, overwrite, is_dir, kind, inputs, error)
    staging = Path(tempfile.mkdtemp(prefix="chunkygan-upload-"))
    try:
        tmp = staging / paths.name(final)
        if is_dir:
            tmp.mkdir()
        yield tmp
        _check_writable_remote(final, overwrite, is_dir, kind, (), error)  # nothing new meanwhile
        if not is_dir:
            paths.upload(tmp, final)  # one PUT: readers see the old object or the new one
            return
        entries = sorted(p.name for p in tmp.iterdir())
        marker = paths.join(final, MARKER)
        old = [rel for rel in paths.find(final) if rel != MARKER]
        old_entries = {rel.split("/", 1)[0] for rel in old}
        paths.write_bytes(marker, _marker_bytes(kind, old_entries | set(entries), complete=False))
        new = [p.relative_to(tmp).as_posix() for p in sorted(tmp.rglob("*")) if p.is_file()]
        for rel in new:
            paths.upload(tmp / rel, paths.join(final, rel))
        for rel in sorted(set(old) - set(new)):
            paths.remove(paths.join(final, rel))
        paths.write_bytes(marker, _marker_bytes(kind, entries, complete=True))  # last: now it is published
    finally:
        shutil.rmtree(staging, ignore_errors=True)
