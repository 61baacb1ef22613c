"""Torch- and TensorFlow-free reader for NVIDIA's TensorFlow StyleGAN2 network pickles.

NVIDIA's original StyleGAN2 release (and StyleGAN2-ADA's TensorFlow code) pickles a tuple (G, D, Gs)
of `dnnlib.tflib.network.Network` objects. Each one's state is a dict: version, name, static_kwargs
(the network's constructor options), components (sub-networks: Gs has "mapping" and "synthesis"),
build_module_src (the Python source that builds the TensorFlow graph), build_func_name, and variables
(a list of (name, numpy array) pairs).

The file is read through `chunkygan_jax.safe_pickle` like every checkpoint: the only globals it may
name are the Network class (a plain stand-in here), numpy's array, dtype and scalar records (checked,
bounded: plain numeric dtypes only, shapes that match their bytes, every array charged to the file's
memory budget) and dict-like containers. `build_module_src` is never executed, and not even kept.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..safe_pickle import NDARRAY, MemoryBudget, SafeUnpickler, clip
from .torch_pickle import _guarded, _plain

__all__ = ["read_tf_pickle"]

_MAX_DEPTH = 8  # Gs -> mapping / synthesis: 2 levels
_MAX_VARIABLES = 100_000  # a 1024 px config-f Gs has about 120


class _Network:
    """Stand-in for dnnlib.tflib.network.Network: BUILD fills in its state, nothing runs."""


class _Unpickler(SafeUnpickler):
    instantiable = frozenset({_Network, dict, collections.OrderedDict})
    attribute_targets = (_Network,)

    def resolve_global(self, module: str, name: str):
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        allowed = {
            ("dnnlib.tflib.network", "Network"): _Network,
            ("numpy", "ndarray"): NDARRAY,  # only as the tag numpy's array records carry
            ("numpy", "dtype"): self.numpy_dtype,
            ("numpy.core.multiarray", "_reconstruct"): self.numpy_reconstruct,  # numpy 1.x name
            ("numpy._core.multiarray", "_reconstruct"): self.numpy_reconstruct,  # numpy 2.x name
            ("numpy.core.multiarray", "scalar"): self.numpy_scalar,
            ("numpy._core.multiarray", "scalar"): self.numpy_scalar,
            ("dnnlib.util", "EasyDict"): dict,  # attribute-access dicts in static_kwargs
            ("dnnlib", "EasyDict"): dict,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("_codecs", "encode"): self.codecs_encode,  # protocol 2's bytes
        }
        return allowed.get((module, name))

    def refusal(self, module: str, name: str) -> str:
        return (f"refusing to load global {module}.{name} from {self.source}: not part of a TensorFlow "
                "StyleGAN2 network pickle")


def _network_state(net, where: str) -> dict:
    if not isinstance(net, _Network):
        raise CheckpointError(clip(f"{where} is a {type(net).__name__}, not a TensorFlow network"))
    state = vars(net)
    version = state.get("version")
    if type(version) is not int or version < 4:
        raise CheckpointError(clip(f"{where}: TensorFlow network pickle version {version!r:.20} is not "
                                   "supported (StyleGAN2's are version 4)"))
    for key, kind in (("static_kwargs", dict), ("components", dict), ("variables", (list, tuple))):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(clip(f"{where}: malformed network state ({key} is a "
                                       f"{type(state.get(key)).__name__})"))
    return state


def _collect(net, prefix: str, out: dict, seen: set, where: str) -> None:
    """Every variable of `net` and its components, named with their component path
    ("mapping/Dense0/weight"), as float32 arrays."""
    if id(net) in seen:
        raise CheckpointError(clip(f"{where}: network {prefix or 'Gs'!r} is reachable along more than one path"))
    if prefix.count("/") >= _MAX_DEPTH:
        raise CheckpointError(clip(f"{where}: networks nested more than {_MAX_DEPTH} levels deep"))
    seen.add(id(net))
    state = _network_state(net, where)
    for item in state["variables"]:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and type(item[0]) is str):
            raise CheckpointError(clip(f"{where}: malformed variable record in {prefix or 'Gs'!r}"))
        name, value = prefix + item[0], item[1]
        # TensorFlow StyleGAN2 stores float32 only; anything else is refused rather than converted.
        if not isinstance(value, (np.ndarray, np.generic)) or value.dtype != np.float32:
            kind = value.dtype if isinstance(value, (np.ndarray, np.generic)) else type(value).__name__
            raise CheckpointError(clip(f"{where}: variable {name} is {kind}, not a float32 array"))
        if name in out or len(out) >= _MAX_VARIABLES:
            raise CheckpointError(clip(f"{where}: variable {name} appears twice, or too many variables"))
        out[name] = np.asarray(value)
    for name, comp in state["components"].items():
        if type(name) is not str or "/" in name:
            raise CheckpointError(clip(f"{where}: malformed component name {name!r:.40}"))
        _collect(comp, f"{prefix}{name}/", out, seen, where)


def read_tf_pickle(path) -> dict:
    """Read an NVIDIA TensorFlow StyleGAN2 network pickle without TensorFlow or torch.

    Returns the generator to use (Gs, the moving average) as {"name", "version", "static_kwargs",
    "build_func_name", "variables": {"mapping/Dense0/weight": float32 array, ...}}.
    """

    def read(p: Path, budget: MemoryBudget):
        with open(p, "rb") as f:
            data = _Unpickler(f, str(p), budget=budget).load()
        if not (type(data) is tuple and len(data) == 3 and all(isinstance(n, _Network) for n in data)):
            raise CheckpointError(f"{p}: not a TensorFlow StyleGAN2 network pickle (expected the tuple "
                                  f"(G, D, Gs), found a {type(data).__name__})")
        gs = data[2]  # (G, D, Gs): Gs holds the moving average of G's weights, what NVIDIA samples with
        variables: dict = {}
        _collect(gs, "", variables, set(), str(p))
        state = vars(gs)
        kwargs = _plain(state["static_kwargs"])
        if not all(type(k) is str for k in kwargs):
            raise CheckpointError(f"{p}: malformed static_kwargs")
        # state["build_module_src"] is the network's Python source: deliberately ignored, never run.
        return {"name": clip(state.get("name"), 100), "version": state["version"], "static_kwargs": kwargs,
                "build_func_name": clip(state.get("build_func_name"), 200), "variables": variables}

    return _guarded(path, "TensorFlow network pickle", read)
