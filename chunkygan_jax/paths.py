"""Local, gs:// and s3:// paths behind one small set of functions (object stores through fsspec).

A local path stays a `pathlib.Path` and every function here does what the local file system does; a
URL (`gs://bucket/key`, `s3://bucket/key`) stays a string, because `Path` would fold its `//`. On an
object store there are no folders, only keys with a common prefix: a "folder" exists when some key
starts with it, objects are written whole (one PUT each, never appended to, never renamed), and
`local_copy` brings a remote file or folder to a temporary local one for readers that need a file.

Clients: gs:// uses gcsfs's JSON-API client (`gcsfs.core.GCSFileSystem`, plain HTTP over aiohttp;
`STORAGE_EMULATOR_HOST` points it at an emulator, anonymous there), never its gRPC-probing extended
client; s3:// uses s3fs (botocore's usual credentials; `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
points it at another server). Both come with the `storage` extra.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import warnings
from pathlib import Path

from .errors import ConfigError

SCHEMES = ("gs", "s3")
_FILESYSTEMS: dict[tuple, object] = {}


def is_remote(path) -> bool:
    """True for a gs:// or s3:// URL."""
    return isinstance(path, str) and path.split("://", 1)[0] in SCHEMES and "://" in path


def as_path(path):
    """A URL as a string (trailing '/' dropped), anything else as a Path."""
    if is_remote(path):
        scheme, rest = path.split("://", 1)
        rest = rest.strip("/")
        if not rest:
            raise ConfigError(f"{path}: give a bucket (gs://BUCKET/...)")
        return f"{scheme}://{rest}"
    if isinstance(path, str) and "://" in path:
        raise ConfigError(f"{path}: only local paths, gs:// and s3:// are supported")
    return Path(path)


def join(base, *parts):
    """`base / part / ...` for a Path or a URL (parts are posix relative paths)."""
    base = as_path(base)
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return posixpath.join(base, *[str(p).strip("/") for p in parts])


def name(path) -> str:
    return posixpath.basename(path) if is_remote(path) else Path(path).name


def parent(path):
    if is_remote(path):
        scheme, rest = path.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}" if "/" in rest else path
    return Path(path).parent


def relative(path, root) -> str:
    """The posix relative path of `path` under `root`."""
    if is_remote(path):
        return posixpath.relpath(_key(path), _key(root))
    return Path(path).relative_to(root).as_posix()


def is_under(path, root) -> bool:
    """`path` is `root` or inside it (resolved for local paths)."""
    if is_remote(path) or is_remote(root):
        if not (is_remote(path) and is_remote(root)):
            return False
        p, r = as_path(path), as_path(root)
        return p == r or p.startswith(r + "/")
    p, r = Path(path).resolve(), Path(root).resolve()
    return p == r or r in p.parents


# ------------------------------------------------------------------------------------------ clients
def _key(url: str) -> str:
    return url.split("://", 1)[1].strip("/")


def bucket(url: str) -> str:
    return _key(url).split("/", 1)[0]


def filesystem(url: str):
    """The fsspec file system serving `url` (one per scheme and endpoint, reused)."""
    scheme = url.split("://", 1)[0]
    endpoint = (os.environ.get("STORAGE_EMULATOR_HOST") if scheme == "gs" else
                os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    cached = _FILESYSTEMS.get((scheme, endpoint))
    if cached is not None:
        return cached
    try:
        if scheme == "gs":
            with warnings.catch_warnings():  # google-api-core's notes on Python versions, at import
                warnings.simplefilter("ignore", FutureWarning)
                from gcsfs.core import GCSFileSystem

            # no listings cache: other processes write the same bucket
            fs = (GCSFileSystem(token="anon", endpoint_url=endpoint, use_listings_cache=False) if endpoint
                  else GCSFileSystem(use_listings_cache=False))
        else:
            from s3fs import S3FileSystem

            fs = S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {},
                              use_listings_cache=False)
    except ImportError:
        raise ConfigError(f"{url}: {scheme}:// paths need {'gcsfs' if scheme == 'gs' else 's3fs'}; install "
                          "them with pip install 'chunkygan_jax[storage]'") from None
    _FILESYSTEMS[(scheme, endpoint)] = fs
    return fs


def _fs(url):
    return filesystem(url), _key(url)


# ------------------------------------------------------------------------------------------ queries
def exists(path) -> bool:
    if not is_remote(path):
        return Path(path).exists()
    fs, key = _fs(path)
    return fs.exists(key)


def isfile(path) -> bool:
    if not is_remote(path):
        return Path(path).is_file()
    fs, key = _fs(path)
    return fs.isfile(key)


def isdir(path) -> bool:
    """A local folder, or a prefix some object starts with (a bucket counts)."""
    if not is_remote(path):
        return Path(path).is_dir()
    fs, key = _fs(path)
    return fs.isdir(key)


def listdir(path) -> list[str]:
    """The names directly under a folder or prefix (sorted; [] when there is none)."""
    if not is_remote(path):
        return sorted(os.listdir(path)) if Path(path).is_dir() else []
    fs, key = _fs(path)
    try:
        return sorted({posixpath.basename(e.rstrip("/")) for e in fs.ls(key, detail=False, refresh=True)})
    except FileNotFoundError:
        return []


def find(path) -> list[str]:
    """Every file under a folder or prefix, as sorted posix paths relative to it."""
    if not is_remote(path):
        root = Path(path)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    fs, key = _fs(path)
    return sorted(posixpath.relpath(k, key) for k in fs.find(key + "/"))


def glob(pattern: str) -> list:
    """Files matching a glob (`**` recurses): Paths locally, URLs remotely."""
    if not is_remote(pattern):
        import glob as _glob

        return [Path(p) for p in _glob.glob(pattern, recursive=True) if Path(p).is_file()]
    fs, key = _fs(pattern)
    scheme = pattern.split("://", 1)[0]
    found = fs.glob(key, detail=True)
    return [f"{scheme}://{k}" for k, info in found.items() if info.get("type") == "file"]


# ------------------------------------------------------------------------------------------ reading, writing
def read_bytes(path) -> bytes:
    if not is_remote(path):
        return Path(path).read_bytes()
    fs, key = _fs(path)
    return fs.cat_file(key)


def read_text(path) -> str:
    return read_bytes(path).decode()


def write_bytes(url: str, data: bytes) -> None:
    """One whole object (remote only: local files are written through files.atomic_path)."""
    fs, key = _fs(url)
    fs.pipe_file(key, data)


def upload(local: Path, url: str) -> None:
    """A local file as one whole object."""
    fs, key = _fs(url)
    fs.put_file(str(local), key)


def remove(url: str, recursive: bool = False) -> None:
    fs, key = _fs(url)
    try:
        fs.rm(key, recursive=recursive)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def local_copy(path):
    """A local path to read `path` from: itself when local; else a temporary copy of the remote file or
    folder (same name), deleted when the block ends."""
    if not is_remote(path):
        yield Path(path)
        return
    fs, key = _fs(path)
    tmp = Path(tempfile.mkdtemp(prefix="chunkygan-download-"))
    try:
        target = tmp / (posixpath.basename(key) or "download")
        if fs.isdir(key):
            for rel in find(path):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f"{key}/{rel}", str(target / rel))
        elif fs.isfile(key):
            fs.get_file(key, str(target))
        else:
            raise FileNotFoundError(f"{path}: no such object or prefix")
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
