"""Edit directions in W: read from .npy files or arrays, checked and brought to [num_ws, w_dim]."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError


def _to_layers(arr, generator, name, xp):
    """(num_ws, w_dim), (1, w_dim) or (w_dim,) -> [num_ws, w_dim] (one row is repeated to every layer, as
    the authors' tool does). The one shape rule for host and device (possibly traced) directions."""
    num_ws, w_dim = generator.num_ws, generator.w_dim
    if arr.shape in ((w_dim,), (1, w_dim)):
        return xp.broadcast_to(arr.reshape(1, w_dim), (num_ws, w_dim))
    if arr.shape != (num_ws, w_dim):
        raise ConfigError(f"{name}: direction has shape {arr.shape}; this generator needs "
                          f"({num_ws}, {w_dim}), (1, {w_dim}) or ({w_dim},)")
    return arr


def load_direction(direction, generator) -> np.ndarray:
    """A direction (.npy path or array) of shape (num_ws, w_dim), (1, w_dim) or (w_dim,), float32 or
    float64 -> float32 [num_ws, w_dim]."""
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
    arr = _to_layers(arr, generator, name, np)
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name}: direction contains NaN or infinite values")
    return np.array(arr, np.float32)


def as_direction(direction, generator):
    """`load_direction` for files and host arrays; device (possibly traced) arrays are only reshaped."""
    if not isinstance(direction, jax.Array):
        return jnp.asarray(load_direction(direction, generator))
    if not jnp.issubdtype(direction.dtype, jnp.floating):
        raise ConfigError(f"direction dtype must be floating point, got {direction.dtype}")
    return _to_layers(direction, generator, "direction", jnp).astype(jnp.float32)
