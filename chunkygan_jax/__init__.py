"""chunkygan_jax: ChunkyGAN real-image inversion via segments, in JAX.

The public API, re-exported: invert / invert_batch / Inverter / Monitor (inversion.py), the pure core
inversion_core / Core / CoreState / InversionSettings (core.py), the other settings objects MaskSettings
(masks/options.py), ReadOptions (io.py) and DatasetOptions with invert_dataset (dataset.py), load_generator /
save_generator (checkpoints.py), resolve_generator (demo.py), InversionResult / load_result
(results.py), the generators and the error types. The layering of the modules is described in
WORKSPACE.md. The names are imported on first use, so that a tool answers --help without loading
the networks.

Importing the package leaves JAX's configuration alone. `enable_compilation_cache()` turns on JAX's
persistent compilation cache in the project's cache folder (compilation_cache.py); the tools in bin/
call it.
"""

import importlib

_EXPORTS = {
    "errors": ["ChunkyGANError", "CheckpointError", "ConfigError", "ImageError", "ResourceError"],
    "generators": ["DCGAN", "StyleGAN2", "StyleGAN2Config"],
    "checkpoints": ["load_generator", "save_generator"],
    "demo": ["resolve_generator"],
    "results": ["InversionResult", "load_result"],
    "groups": ["FaceGroup", "load_group"],
    "core": ["Core", "CoreState", "InversionSettings", "inversion_core"],
    "inversion": ["Inverter", "Monitor", "invert", "invert_batch"],
    "masks.options": ["MaskSettings"],
    "io": ["ReadOptions"],
    "dataset": ["DatasetOptions", "invert_dataset"],
    "tuning": ["TuningSettings", "tune_results"],
    "deltas": ["tuned_generator"],
    "compilation_cache": ["enable_compilation_cache"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
