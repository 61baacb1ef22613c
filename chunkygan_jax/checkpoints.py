"""Our generator checkpoint format, and the cache of converted foreign checkpoints.

A generator checkpoint is a directory:

    generator.json   record: {"format_version": 1, "kind": "stylegan2", "config": {...}, "source": {...},
                     "w_avg_source": ..., ["class_w_avg_source": ...,] "converter_version": "1",
                     "num_params": N}
    params/          orbax checkpoint of the parameter tree (numpy float32 arrays)

`load_generator` also takes an NVIDIA `.pkl` (PyTorch or TensorFlow) or rosinality `.pt`: it is converted once and cached under
`cache_root()/generators/<sha256 of the file>/`, so later loads skip the (slow) pickle parsing.

The record's "kind" selects how params become a generator object. The kinds are listed here, explicitly
("stylegan2", "dcgan"); `register_generator_kind` adds another one when called.

Every generator `load_generator` returns remembers where it came from (`loaded_from`): the checkpoint's
absolute path or bucket URL, which a result records as its generator (`results.generator_record`).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from . import paths
from .converters import stylegan2 as conv
from .errors import CheckpointError
from .files import atomic_path, cache_root, check_writable, read_json_record, sha256_file
from .generators.dcgan import DCGAN, dcgan_from_params
from .generators.statedict import expected_shapes
from .generators.stylegan2 import StyleGAN2, StyleGAN2Config
from .trees import flatten_tree

__all__ = ["FORMAT_VERSION", "RECORD_NAME", "cache_root", "convert_checkpoint", "load_generator",
           "read_record", "register_generator_kind", "save_generator"]

FORMAT_VERSION = 1
CONVERTER_VERSION = "1"  # bump when conversion output changes: cached conversions are then redone
RECORD_NAME = "generator.json"
CHECKPOINT_KIND = "generator checkpoint"
PARAMS_NAME = "params"


@dataclasses.dataclass(frozen=True)
class _Kind:
    type: type
    to_config: Callable[[Any], dict]  # generator -> JSON-able config dict
    from_params: Callable[[dict, dict], Any]  # (config dict, params tree) -> generator; CheckpointError if they disagree


_KINDS: dict[str, _Kind] = {}


def register_generator_kind(kind: str, generator_type: type, to_config: Callable, from_params: Callable) -> None:
    """Make `save_generator` accept `generator_type` and `load_generator` read records of `kind`."""
    _KINDS[kind] = _Kind(generator_type, to_config, from_params)


def _stylegan2_from_params(config: dict, params: dict) -> StyleGAN2:
    try:
        cfg = StyleGAN2Config.from_dict(config)
        expected = expected_shapes(cfg)
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"bad StyleGAN2 config in record: {e}") from None
    flat = flatten_tree(params, sep=".")
    problems = sorted(set(expected) ^ set(flat))
    problems += [f"{k} {flat[k].shape} != {expected[k]}" for k in expected if k in flat and flat[k].shape != expected[k]]
    if problems:
        raise CheckpointError("params do not match the recorded config: " + ", ".join(problems[:8])
                              + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""))
    return StyleGAN2(config=cfg, params=params)


_KINDS.update({
    "stylegan2": _Kind(StyleGAN2, lambda g: g.config.to_dict(), _stylegan2_from_params),
    "dcgan": _Kind(DCGAN, lambda g: g.config.to_dict(), dcgan_from_params),
})


def _as_numpy(tree):
    # orbax then writes plain host arrays; jax arrays would also record a device sharding we don't want.
    return {k: _as_numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in tree.items()}


# ---------------------------------------------------------------------------------------------- save


_LIFTED = ("w_avg_source", "class_w_avg_source")  # source entries that go to the record's top level


def save_generator(generator, directory, *, source: dict | None = None, overwrite: bool = False) -> dict:
    """Write `generator` as a checkpoint directory and return its record.

    `source` is the provenance from `converters.stylegan2.convert_file`; its "w_avg_source" entry goes
    to the record's top level ("checkpoint" when absent), and so does a conditional generator's
    "class_w_avg_source" (how each class's mean w was obtained). The directory appears complete or not at
    all: everything is built in a temporary sibling and renamed into place. An existing non-empty
    directory is replaced only with `overwrite=True`, and only if it is a generator checkpoint this
    project wrote (files.atomic_path), so a mistyped --output can never delete an unrelated folder.
    """
    kind = next((name for name, k in _KINDS.items() if isinstance(generator, k.type)), None)
    if kind is None:
        raise CheckpointError(f"no checkpoint kind registered for {type(generator).__name__}")
    target = Path(directory).absolute()
    _check_target(target, overwrite)
    source = dict(source or {})
    params = _as_numpy(generator.params)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": _KINDS[kind].to_config(generator),
        "source": {k: v for k, v in source.items() if k not in _LIFTED} or None,
        "w_avg_source": source.get("w_avg_source", "checkpoint"),
        **({"class_w_avg_source": source.get("class_w_avg_source", "checkpoint")}
           if generator.num_classes else {}),
        "converter_version": CONVERTER_VERSION,
        "num_params": int(sum(a.size for a in flatten_tree(params, sep=".").values())),
    }
    # An unwritable target is refused (CheckpointError) before anything is written; an OSError while
    # writing (disk full...) stays one, for the tools to report as the machine's failure.
    with atomic_path(target, is_dir=True, overwrite=overwrite, kind=CHECKPOINT_KIND, error=CheckpointError) as tmp:
        import orbax.checkpoint as ocp  # lazy: orbax is slow to import and only needed here

        with ocp.StandardCheckpointer() as ckptr:  # leaving the block waits for the async write
            ckptr.save(tmp / PARAMS_NAME, params)
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _check_target(target: Path, overwrite: bool) -> None:
    check_writable(target, overwrite, is_dir=True, kind=CHECKPOINT_KIND, error=CheckpointError)


# ---------------------------------------------------------------------------------------------- load


def read_record(directory) -> dict:
    """The validated generator.json of a checkpoint directory."""
    directory = Path(directory)
    path = directory / RECORD_NAME
    if not directory.is_dir():
        raise CheckpointError(f"generator checkpoint not found: {directory}")
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a generator checkpoint (no {RECORD_NAME})")
    record = read_json_record(path)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise CheckpointError(f"corrupt {path}: not a generator record")
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {record.get('format_version')!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    if record.get("kind") not in _KINDS:
        raise CheckpointError(f"{path}: unknown generator kind {record.get('kind')!r} "
                              f"(known: {', '.join(sorted(_KINDS))})")
    return record


def _load_directory(directory: Path):
    record = read_record(directory)
    params_dir = (directory / PARAMS_NAME).absolute()
    if not params_dir.is_dir():
        raise CheckpointError(f"{directory}: params/ is missing")
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(params_dir)
        params = _as_numpy(params)
    # orbax/tensorstore raise many undocumented types (ValueError, FileNotFoundError, tensorstore's
    # own) for damaged files; all mean the same thing here.
    except Exception as e:  # noqa: BLE001
        detail = str(e).split(" [tensorstore_spec=")[0][:300]  # tensorstore appends a huge JSON spec
        raise CheckpointError(f"{params_dir}: unreadable params ({type(e).__name__}: {detail})") from None
    return _KINDS[record["kind"]].from_params(record["config"], params)


# where each loaded generator came from, keyed by its first parameter array: generators that share it
# (one bound to a class, one with remat or another compute dtype) come from the same checkpoint
_SOURCES: dict[int, str] = {}


def _anchor(generator):
    leaves = [x for x in jax.tree_util.tree_leaves(generator.params) if hasattr(x, "shape")]
    return leaves[0] if leaves else None


def note_source(generator, source: str):
    """Remember that `generator` was loaded from `source` (a path, a URL or "demo"); returns it."""
    anchor = _anchor(generator)
    if anchor is not None:
        key = id(anchor)
        if key not in _SOURCES:  # an id is reused only after its array dies, which drops the entry
            weakref.finalize(anchor, _SOURCES.pop, key, None)
        _SOURCES[key] = str(source)
    return generator


def loaded_from(generator) -> str | None:
    """Where `generator` (or one sharing its parameters) was loaded from; None for one made in memory."""
    anchor = _anchor(generator)
    return None if anchor is None else _SOURCES.get(id(anchor))


def load_generator(path):
    """Load a generator from our checkpoint directory, or from an NVIDIA `.pkl` (PyTorch or TensorFlow)
    / rosinality `.pt` (converted on first use and cached by the file's sha256). A conditional
    generator comes back unbound: `generators.protocol.bind_label(generator, k)` picks its class. A
    gs:// or s3:// path is read through a temporary local copy (a converted file is cached locally)."""
    if paths.is_remote(path):
        if not paths.exists(path):
            raise CheckpointError(f"generator checkpoint not found: {path}")
        with paths.local_copy(path) as local:
            return note_source(load_generator(local), path)
    path = Path(path)
    return note_source(_load_path(path), path.resolve())


def _load_path(path: Path):
    if path.is_dir():
        return _load_directory(path)
    if not path.is_file():
        raise CheckpointError(f"generator checkpoint not found: {path}")
    sha = sha256_file(path)
    entry = cache_root() / "generators" / sha
    stale = False
    if (entry / RECORD_NAME).is_file():
        try:
            # An entry from an older converter is redone: conversion fixes must reach cached files too.
            stale = read_record(entry).get("converter_version") != CONVERTER_VERSION
            if not stale:
                return _load_directory(entry)
        except CheckpointError as e:
            raise CheckpointError(f"{e} [cached conversion of {path}; delete {entry} to convert again]") from None
    generator, source = conv.convert_file(path, sha256=sha)
    try:
        save_generator(generator, entry, source=source, overwrite=stale)
    except (CheckpointError, OSError) as e:
        # Another process may have cached the same file meanwhile; otherwise the cache is unwritable,
        # which only costs a reconversion next time.
        if not (entry / RECORD_NAME).is_file():
            warnings.warn(f"could not cache the conversion of {path}: {e}", stacklevel=2)
    return generator


def convert_checkpoint(src, directory, *, overwrite: bool = False):
    """Convert an NVIDIA `.pkl` (PyTorch or TensorFlow) / rosinality `.pt` file into a checkpoint directory
    (not via the cache).
    Returns (generator, record). Nothing is written when the input cannot be converted."""
    target = Path(directory)
    _check_target(target.absolute(), overwrite)  # fail before the slow conversion, too
    if not Path(src).is_file():
        raise CheckpointError(f"input checkpoint not found: {src}")
    generator, source = conv.convert_file(src)
    return generator, save_generator(generator, target, source=source, overwrite=overwrite)
