"""Which latent space codes are in, conversions between W, W+ and S, and parsing of segment, layer and
style-layer choices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..inversion import SPACE_ALIASES

# ---------------------------------------------------------------------------------------- latent spaces
def latent_space(generator, codes) -> str:
    """'w', 'w+' or 's', read from the structure of `codes` (segment axis first); ConfigError if the
    codes do not fit the generator."""
    if not all(hasattr(generator, a) for a in ("num_ws", "w_dim", "styles_from_ws")):
        raise ConfigError(f"editing needs a StyleGAN generator (W, W+ and S spaces); this "
                          f"{type(generator).__name__} has latent spaces {getattr(generator, 'latent_spaces', ())}")
    if isinstance(codes, dict):
        names = generator.config.layer_names()
        if set(codes) != set(names):
            missing, extra = sorted(set(names) - set(codes)), sorted(set(codes) - set(names))
            raise ConfigError(f"S-space codes do not fit this generator (missing layers {missing[:4]}, "
                              f"unknown layers {extra[:4]})")
        dims = generator.config.style_dims()
        for name, v in codes.items():
            if jnp.ndim(v) != 2 or jnp.shape(v)[1] != dims[name]:
                raise ConfigError(f"S code {name} must be [n, {dims[name]}], got {tuple(jnp.shape(v))}")
        return "s"
    shape = tuple(jnp.shape(codes))
    if len(shape) == 3 and shape[2] == generator.w_dim and shape[1] in (1, generator.num_ws):
        return "w" if shape[1] == 1 else "w+"
    raise ConfigError(f"codes must be W [n, 1, {generator.w_dim}], W+ [n, {generator.num_ws}, "
                      f"{generator.w_dim}] or an S-space dict; got shape {shape}")


def check_space(generator, codes, space):
    found = latent_space(generator, codes)
    if space is not None:
        if SPACE_ALIASES.get(space, space) != found:
            raise ConfigError(f"space {space!r} does not match the codes, which are {found!r}")
    return found


def count_segments(codes) -> int:
    return int(jnp.shape(jax.tree_util.tree_leaves(codes)[0])[0])


def to_wplus(generator, codes):
    """W [n, 1, w_dim] or W+ codes -> W+ [n, num_ws, w_dim]."""
    space = latent_space(generator, codes)
    if space == "s":
        raise ConfigError("these codes are in S space; W directions apply to W and W+ codes only "
                          "(apply style edits instead, or project in w / w+)")
    return generator.to_ws(jnp.asarray(codes, jnp.float32), space)


def to_styles(generator, codes) -> dict:
    """W, W+ or S codes -> S codes {layer: [n, channels]} (the generator's affine outputs)."""
    if latent_space(generator, codes) == "s":
        return {k: jnp.asarray(v, jnp.float32) for k, v in codes.items()}
    return generator.styles_from_ws(to_wplus(generator, codes))


# ---------------------------------------------------------------------------------------- parsing
def segment_indices(segments, n: int) -> tuple[int, ...]:
    """'all' / None -> every segment; an int or a sequence of ints -> those, checked against n."""
    if segments is None or (isinstance(segments, str) and segments.strip().lower() == "all"):
        return tuple(range(n))
    if isinstance(segments, str):
        return segment_indices(parse_segments(segments), n)
    if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
        segments = (int(segments),)
    try:
        idx = tuple(segments)
    except TypeError:
        raise ConfigError(f"segments must be 'all', an index or a list of indices, got {segments!r}") from None
    if not idx:
        raise ConfigError("no segments chosen")
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ConfigError(f"segment indices must be integers, got {i!r}")
        if not 0 <= i < n:
            raise ConfigError(f"unknown segment {i}: this result has {n} segment(s), indices 0..{n - 1}")
    if len(set(idx)) != len(idx):
        raise ConfigError(f"segment listed twice in {list(idx)}")
    return tuple(int(i) for i in idx)


def parse_segments(text: str):
    """'all' or '1,3' -> 'all' or (1, 3)."""
    text = text.strip()
    if text.lower() == "all":
        return "all"
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"segments must be 'all' or comma-separated indices like '1,3', got {text!r}") from None


def layer_range(layers, num_ws: int) -> tuple[int, int]:
    """A ws row range [lo, hi) with python slice semantics, 0 <= lo < hi <= num_ws.
    Accepts None / 'all' (every row), 'lo:hi' (either end may be left out), (lo, hi) or a slice."""
    if layers is None or (isinstance(layers, str) and layers.strip().lower() == "all"):
        return 0, num_ws
    if isinstance(layers, str):
        parts = layers.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            lo = int(parts[0]) if parts[0].strip() else 0
            hi = int(parts[1]) if parts[1].strip() else num_ws
        except ValueError:
            raise ConfigError(f"layers must look like 'lo:hi' (e.g. '0:8'), got {layers!r}") from None
    elif isinstance(layers, slice):
        if layers.step not in (None, 1):
            raise ConfigError(f"layer ranges have no step, got {layers!r}")
        lo = 0 if layers.start is None else layers.start
        hi = num_ws if layers.stop is None else layers.stop
    else:
        try:
            lo, hi = layers
        except (TypeError, ValueError):
            raise ConfigError(f"layers must be 'lo:hi', (lo, hi) or a slice, got {layers!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo, hi)):
        raise ConfigError(f"layer range bounds must be integers, got {lo!r}:{hi!r}")
    if not 0 <= lo < hi <= num_ws:
        raise ConfigError(f"layer range {lo}:{hi} is out of bounds: need 0 <= lo < hi <= num_ws = {num_ws}")
    return int(lo), int(hi)


def resolve_style_layer(generator, layer) -> str:
    """A StyleSpace layer given by name ('b8.conv0') or by index into `config.layer_names()` (the
    generator's style order, ToRGB layers included: 26 layers at 1024 px) -> its name."""
    names = generator.config.layer_names()
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not 0 <= layer < len(names):
            raise ConfigError(f"unknown S layer index {layer}: this generator has {len(names)} style layers "
                              f"(0..{len(names) - 1})")
        return names[int(layer)]
    if isinstance(layer, str) and layer.strip() in names:
        return layer.strip()
    raise ConfigError(f"unknown S layer {layer!r}; layers are {', '.join(names)} (or their indices)")


def as_number(value, what) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return v
