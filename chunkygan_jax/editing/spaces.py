"""Which latent space codes are in (read through the generator protocol, so every generator works: StyleGAN2's
W, W+ and S, the demo DCGAN's z), the space directions live in, conversions between W, W+ and S, and
parsing of segment, layer and style-layer choices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..generators.protocol import require_generator
from ..inversion import SPACE_ALIASES

# ---------------------------------------------------------------------------------------- latent spaces
_SHAPES: dict = {}  # (generator type, config) -> {space: per-segment code shapes (a tree of tuples)}


def code_shapes(generator) -> dict:
    """{space: the shape of one segment's code} for every latent space of the generator, read from the
    protocol's `initial_codes` without computing anything: StyleGAN2 {'w': (1, w_dim), 'w+': (num_ws,
    w_dim), 's': {layer: (channels,)}}, the demo DCGAN {'z': (z_dim,)}."""
    require_generator(generator)
    key = (type(generator), generator.config)
    if key not in _SHAPES:
        _SHAPES[key] = {space: jax.tree_util.tree_map(lambda s: tuple(s.shape[1:]), jax.eval_shape(
            lambda g, space=space: g.initial_codes(space, 1), generator)) for space in generator.latent_spaces}
    return _SHAPES[key]


def _shape_text(shape) -> str:
    if isinstance(shape, dict):
        return "an S-space dict {layer: [n, channels]}"
    return "[n, " + ", ".join(map(str, shape)) + "]"


def latent_space(generator, codes) -> str:
    """The space of `codes` (segment axis first), read from their structure and matched against the
    generator's spaces (StyleGAN2: 'w', 'w+' or 's'; the demo DCGAN: 'z'); ConfigError if they fit none."""
    shapes = code_shapes(generator)
    if isinstance(codes, dict):
        space = next((sp for sp, want in shapes.items() if isinstance(want, dict)), None)
        if space is None:
            raise ConfigError(f"codes given as a dict of layers (S space) but this {type(generator).__name__} "
                              f"has latent spaces {tuple(generator.latent_spaces)}")
        want = shapes[space]
        if set(codes) != set(want):
            missing, extra = sorted(set(want) - set(codes)), sorted(set(codes) - set(want))
            raise ConfigError(f"S-space codes do not fit this generator (missing layers {missing[:4]}, "
                              f"unknown layers {extra[:4]})")
        for name, v in codes.items():
            if tuple(jnp.shape(v))[1:] != want[name] or jnp.ndim(v) != 1 + len(want[name]):
                raise ConfigError(f"S code {name} must be {_shape_text(want[name])}, got {tuple(jnp.shape(v))}")
        return space
    shape = tuple(jnp.shape(codes))
    for space, want in shapes.items():
        if not isinstance(want, dict) and len(shape) == 1 + len(want) and shape[1:] == want:
            return space
    options = " or ".join(f"{sp.upper()} {_shape_text(want)}" for sp, want in shapes.items())
    raise ConfigError(f"codes must be {options} for this generator; got shape {shape}")


def direction_space(generator) -> str:
    """The space directions live in: W+ for a StyleGAN2 (W codes are broadcast to it, and layer ranges
    pick rows), otherwise the generator's default space if its codes are plain vectors (the demo
    DCGAN: z, directions of shape (z_dim,))."""
    shapes = code_shapes(generator)
    space = "w+" if "w+" in shapes else generator.default_space
    if isinstance(shapes.get(space), dict):
        raise ConfigError(f"this {type(generator).__name__} has no vector latent space for directions")
    return space


def direction_shape(generator) -> tuple:
    """The shape of a direction for this generator: (num_ws, w_dim) for a StyleGAN2, (z_dim,) for a
    z-space generator."""
    return code_shapes(generator)[direction_space(generator)]


def direction_codes(generator, codes):
    """Codes brought to the direction space ([n, num_ws, w_dim] W+ for a StyleGAN2, [n, z_dim] for z)."""
    space, target = latent_space(generator, codes), direction_space(generator)
    if space == target:
        return jnp.asarray(codes, jnp.float32)
    if space == "w" and target == "w+":
        return generator.to_ws(jnp.asarray(codes, jnp.float32), "w")
    raise ConfigError(f"these codes are in {space.upper()} space; directions apply to "
                      f"{'W and W+' if target == 'w+' else target.upper()} codes only"
                      + (" (apply style edits instead, or project in w / w+)" if space == "s" else ""))


def direction_rows(generator, layers) -> tuple:
    """The index that a layer range selects in one code of the direction space: (slice(lo, hi),) of
    the W+ rows (see `layer_range`), or () for all of a z code (which has no layers)."""
    if direction_space(generator) == "w+":
        lo, hi = layer_range(layers, generator.num_ws)
        return (slice(lo, hi),)
    if layers is None or (isinstance(layers, str) and layers.strip().lower() == "all"):
        return ()
    raise ConfigError(f"layer ranges apply to the W+ codes of a StyleGAN2; this {type(generator).__name__} "
                      f"has {direction_space(generator)} codes without layers (leave out layers / --layers)")


def check_space(generator, codes, space):
    found = latent_space(generator, codes)
    if space is not None:
        if SPACE_ALIASES.get(space, space) != found:
            raise ConfigError(f"space {space!r} does not match the codes, which are {found!r}")
    return found


def count_segments(codes) -> int:
    return int(jnp.shape(jax.tree_util.tree_leaves(codes)[0])[0])


def to_wplus(generator, codes):
    """W [n, 1, w_dim] or W+ codes -> W+ [n, num_ws, w_dim] (StyleGAN2)."""
    if "w+" not in code_shapes(generator):
        raise ConfigError(f"W+ codes need a StyleGAN2 generator; this {type(generator).__name__} has latent "
                          f"spaces {tuple(generator.latent_spaces)}")
    return direction_codes(generator, codes)


def to_styles(generator, codes) -> dict:
    """W, W+ or S codes -> S codes {layer: [n, channels]} (the generator's affine outputs)."""
    if "s" not in code_shapes(generator):
        raise ConfigError(f"StyleSpace (S) edits need a StyleGAN2 generator; this {type(generator).__name__} "
                          f"has latent spaces {tuple(generator.latent_spaces)}")
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
