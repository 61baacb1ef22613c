"""chunkygan_jax: ChunkyGAN real-image inversion via segments, in JAX.

The public API, re-exported: invert / invert_batch / Inverter (inversion.py), load_generator /
save_generator (checkpoints.py), resolve_generator (demo.py), InversionResult / load_result
(results.py), the generators and the error types. The layering of the modules is described in
WORKSPACE.md.

Importing the package turns on JAX's persistent compilation cache (compilation_cache.py; opt out with
CHUNKYGAN_JAX_COMPILATION_CACHE=0).
"""

from .compilation_cache import enable_compilation_cache as _enable_compilation_cache

_enable_compilation_cache()

from .errors import ChunkyGANError, CheckpointError, ConfigError, ImageError
from .generators import DCGAN, StyleGAN2, StyleGAN2Config
from .checkpoints import load_generator, save_generator
from .demo import resolve_generator
from .results import InversionResult, load_result
from .inversion import InversionSettings, Inverter, invert, invert_batch

__all__ = ["ChunkyGANError", "CheckpointError", "ConfigError", "DCGAN", "ImageError", "InversionResult",
           "InversionSettings", "Inverter", "StyleGAN2", "StyleGAN2Config", "invert", "invert_batch",
           "load_generator", "load_result", "resolve_generator", "save_generator"]
