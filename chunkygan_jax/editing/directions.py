"""Edit directions: `resolve_direction` turns what a user names (a .npy file, an array, or `pca:K`, the
generator's own K-th principal direction) into one checked array of the generator's direction shape:
[num_ws, w_dim] (W+) for a StyleGAN2, [z_dim] for a z-space generator such as the demo DCGAN."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from .spaces import direction_shape

PCA_SPEC = re.compile(r"pca:(\d+)")


def _accepted(shape) -> str:
    dim = shape[-1]
    if len(shape) == 1:
        return f"({dim},) or (1, {dim})"
    return f"({', '.join(map(str, shape))}), (1, {dim}) or ({dim},)"


def _to_shape(arr, generator, name, xp):
    """The one shape rule for host and device (possibly traced) directions. A StyleGAN2 takes (num_ws,
    w_dim), (1, w_dim) or (w_dim,): one row is repeated to every layer, as the authors' tool does. A
    z-space generator takes (z_dim,) or (1, z_dim)."""
    shape = direction_shape(generator)
    dim = shape[-1]
    if arr.shape in ((dim,), (1, dim)):
        return xp.broadcast_to(arr.reshape(dim), shape)
    if arr.shape != shape:
        raise ConfigError(f"{name}: direction has shape {arr.shape}; this generator needs {_accepted(shape)}")
    return arr


def load_direction(direction, generator) -> np.ndarray:
    """A direction (.npy path or array), float32 or float64, of a shape `_to_shape` accepts -> float32
    array of the generator's direction shape."""
    name = "direction"
    if isinstance(direction, (str, Path)):
        path = Path(direction)
        name = str(path)
        if not path.is_file():
            raise ConfigError(f"direction file not found: {path}")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ConfigError(f"{path}: not a numpy .npy direction file ({e})") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise ConfigError(f"{path}: is an .npz archive; a direction is a single .npy array")
    else:
        arr = np.asarray(direction)
    if arr.dtype not in (np.float32, np.float64):
        raise ConfigError(f"{name}: direction dtype must be float32 or float64, got {arr.dtype}")
    arr = _to_shape(arr, generator, name, np)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name}: direction contains NaN or infinite values")
    return np.array(arr, np.float32)


def as_direction(direction, generator):
    """`load_direction` for files and host arrays; device (possibly traced) arrays are only reshaped."""
    if not isinstance(direction, jax.Array):
        return jnp.asarray(resolve_direction(direction, generator))
    if not jnp.issubdtype(direction.dtype, jnp.floating):
        raise ConfigError(f"direction dtype must be floating point, got {direction.dtype}")
    return _to_shape(direction, generator, "direction", jnp).astype(jnp.float32)


def resolve_direction(spec, generator, *, samples=None, seed=0, cache_dir=None) -> np.ndarray:
    """What a user names as a direction -> float32 array of the generator's direction shape. The one
    resolver for the API, bin/edit and other front ends.

    spec: 'pca:K' (the generator's K-th principal direction, computed once and cached; strength 1 is one
    standard deviation along it; see `principal.principal_directions`, whose `samples`, `seed` and
    `cache_dir` apply), a .npy path, or an array. A file literally named like 'pca:3' is './pca:3'."""
    match = PCA_SPEC.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        return load_direction(spec, generator)
    from .principal import principal_direction
    return load_direction(principal_direction(generator, int(match.group(1)), samples=samples, seed=seed,
                                              cache_dir=cache_dir), generator)


def is_pca_spec(spec) -> bool:
    return isinstance(spec, str) and PCA_SPEC.fullmatch(spec.strip()) is not None
