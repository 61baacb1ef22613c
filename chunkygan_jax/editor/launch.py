"""Opening an editor session: a saved result or a photo inverted first, its generator, and the working
folder that exports go to."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from ..align import PASTES, find_alignment
from ..demo import resolve_generator
from ..generators.protocol import bind_label
from ..errors import ConfigError
from ..files import cache_root
from ..inversion import Monitor, as_settings, invert
from ..progress import Progress
from ..results import load_result
from .session import EditorSession

__all__ = ["make_workdir", "open_session", "remove_if_empty"]


def make_workdir(workdir=None) -> Path:
    """The given folder (created if missing; it may already hold files, which the editor never
    replaces), or a new folder <cache>/editor/YYYYmmdd-HHMMSS (`files.cache_root`): never a new folder
    in the current directory unless asked for. `bin/editor` prints where it is and removes it at the
    end if nothing was exported into it."""
    if workdir is not None:
        path = Path(workdir)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--workdir {workdir} is a file, not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the working folder {workdir}: {e.strerror or e}") from None
        return path.resolve()
    parent = cache_root() / "editor"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(1, 1000):
            path = parent / (stamp if k == 1 else f"{stamp}-{k}")
            try:
                path.mkdir()
                return path.resolve()
            except FileExistsError:
                continue
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="chunkygan-editor-")).resolve()  # the cache is not writable


def remove_if_empty(folder) -> bool:
    """Remove a default working folder that nothing was exported into (never one that holds anything)."""
    try:
        Path(folder).rmdir()  # fails on a folder that is not empty
        return True
    except OSError:
        return False


EDITOR_STEPS = 200  # a photo's inversion when the editor opens it: quicker than invert()'s 500


def open_session(*, latents=None, image=None, generator=None, settings=None, workdir=None, directions=None,
                 pca=8, region_steps=100, align=False, face=None, paste=None, log=None) -> EditorSession:
    """An `EditorSession` over the result saved in `latents`, or over `image` inverted first with
    `settings` (an InversionSettings or a dict of its fields, e.g. segments and steps; steps default to
    200 here) (the inversion is saved as inversion/ in the working folder, or inversion-2/
    ... when that name is taken: the editor never replaces what it finds there). With `align`, `image`
    is a photo of any size: its face (the largest, or number `face` from the left) is aligned the FFHQ
    way and inverted, and the session's exports paste the edit back into the photo (`paste`: "residual" or
    "projection"; None: residual where the face in the photo is larger than the generator's images)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    if (latents is None) == (image is None):
        raise ConfigError("give either --latents=RESULT_DIR (a saved result) or --image=PHOTO (inverted first)")
    if directions is not None and not Path(directions).is_dir():
        raise ConfigError(f"--directions {directions} is not a folder of .npy files")
    if image is None and (align or face is not None):
        raise ConfigError("--align and --face apply to --image (a photo inverted first)")
    if face is not None and not align:
        raise ConfigError("--face chooses the face to align; pass --align too")
    if paste is not None and paste not in PASTES:
        raise ConfigError(f"--paste must be one of {', '.join(PASTES)}, got {paste!r}")
    if latents is not None:
        result = load_result(latents)
        spec = generator or result.settings.get("generator")
        if not spec:
            raise ConfigError(f"{latents} records no generator; pass --generator=PATH")
        gen = bind_label(resolve_generator(spec), result.settings.get("label"))  # a conditional one's class
        folder = make_workdir(workdir)
    else:
        if not Path(image).is_file():
            raise ConfigError(f"--image {image}: no such file")
        if settings is None or isinstance(settings, dict):
            settings = {"steps": EDITOR_STEPS, **(settings or {})}
        settings = as_settings(settings)
        spec = generator
        if spec is None:
            log("no --generator given: using the demo DCGAN face generator (64 px)")
        gen = resolve_generator(spec)
        settings = settings.validate(gen)  # before the alignment and the inversion
        alignment = False
        if align:
            alignment = find_alignment(image, face=face)
            n = alignment.faces_found
            log(f"{n} face{'s' if n != 1 else ''} found in {image}; aligning face {alignment.face}"
                + (" (the largest; --face=K chooses another)" if n > 1 and face is None else ""))
        folder = make_workdir(workdir)
        saved = next(folder / n for n in ("inversion", *(f"inversion-{k}" for k in range(2, 10_000)))
                     if not os.path.lexists(folder / n))  # chosen before the inversion runs
        bar = Progress(settings.steps, unit="steps")
        monitor = Monitor(callback=lambda step, total, losses: bar.update(step, f"loss {float(losses[0]):.4f}"),
                          every=max(1, min(25, settings.steps // 20)))
        result = invert(str(image), gen, settings=settings, align=alignment, monitor=monitor)
        result.settings["image"] = str(Path(image).resolve())
        result.save(saved)
        log(f"inverted {image}: lpips {result.final_losses['lpips']:.4f}; saved as {saved}")
    session = EditorSession(result, gen, workdir=folder, directions=directions, pca=pca, region_steps=region_steps,
                            paste=paste)
    if image is not None:
        session.mark_written(saved)
    return session
