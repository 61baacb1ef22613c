"""chunkygan_jax: ChunkyGAN real-image inversion via segments, in JAX.

The public API, re-exported: invert / invert_batch (inversion.py), load_generator / save_generator
(checkpoints.py), load_result (results.py), the generators and the error types.

Importing the package turns on JAX's persistent compilation cache (compilation_cache.py; opt out with
CHUNKYGAN_JAX_COMPILATION_CACHE=0).
"""

from .compilation_cache import enable_compilation_cache as _enable_compilation_cache

_enable_compilation_cache()

from .errors import ChunkyGANError, CheckpointError, ConfigError, ImageError
from .generators import StyleGAN2, StyleGAN2Config
from .checkpoints import load_generator, save_generator
from .inversion import InversionResult, InversionSettings, Inverter, invert, invert_batch
from .results import load_result
