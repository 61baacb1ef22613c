"""chunkygan_jax: ChunkyGAN real-image inversion via segments, in JAX."""

from .errors import ChunkyGANError, CheckpointError, ConfigError, ImageError
from .generators import StyleGAN2, StyleGAN2Config
