"""What an image generator G^I offers, declared as `typing.Protocol`s, and its identity.

`Generator` declares the members that every generator implements (StyleGAN2 and the DCGAN both do) and
that the library reads off any generator: its config and params, resolution, latent spaces and
default space, `default_lambda_reg`, the segment space and features of G^S (`segment_space`,
`feature_layers`, `feature_channels`, `features`, `sample_codes`, `checkerboard_features`), the
inversion's `check_space`, `initial_codes`, `synthesize` and `prepare`, tuning's `drawing_params`,
`noise_buffers`, `num_classes` / `label` and `replace`.
`WSpaceGenerator` adds what only a generator with "w" in its `latent_spaces` has (StyleGAN2): `w_avg`,
`w_dim`, `num_ws`, `mapping`, `to_ws` (W+), StyleSpace (`styles_from_ws`, `synthesis_from_styles`),
`with_noise` and `with_label`. The library reads these only where a value of `Generator` says the
generator has them; it never probes for a method:
  latent_spaces                      "w" / "s" in it: the mapping, w_avg, PCA in W, W+ and StyleSpace,
  noise_buffers()                    not {}: the generator has noise, and `with_noise` draws with given
                                     buffers ({} for the DCGAN),
  num_classes / label                0 / None for an unconditional generator; a conditional one is bound
                                     to a class by `bind_label` (its `with_label`) before it offers the rest,
  checkerboard_features              whether features carry the period-2 pattern of transposed
                                     convolutions (phi filters it out; segmenter/features.py).
`offers_features` and `require_generator` check a generator from elsewhere against the protocol;
`fingerprint` is a generator's identity (sha256 of its config and parameters), the key of every cache
and record that depends on the weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError
from ..trees import flatten_tree

@runtime_checkable
class Generator(Protocol):
    """A pytree (a flax struct: static `config`, array `params`) that draws images from latent codes."""

    config: Any
    params: Any
    resolution: int
    latent_spaces: tuple[str, ...]
    default_space: str
    default_lambda_reg: float  # its weight of the codes' dispersion (StyleGAN2 1.0, the DCGAN 0)
    segment_space: str  # the space of the segment code X^S ('w+' StyleGAN2, 'z' DCGAN)
    feature_layers: tuple[int, ...]  # the resolutions it offers features at
    checkerboard_features: bool
    num_classes: int
    label: Any

    def check_space(self, space: str) -> None:
        """ConfigError naming the spaces it has, for one it lacks."""

    def initial_codes(self, space: str, n: int, start=None) -> Any:
        """The starting codes of n segments (X^S starts at initial_codes(segment_space, 1)[0])."""

    def synthesize(self, codes, space: str, *, noise_mode="const", key=None, dtype=None, remat=False,
                   noise=None) -> Any:
        """Images [N, H, W, 3] in about [-1, 1]."""

    def prepare(self, dtype=None) -> "Generator":
        """The generator with its weight-only preprocessing done once, for loops that draw many times."""

    def drawing_params(self) -> tuple[str, ...]:
        """The flat names of the parameters that draw the image: what pivotal tuning may change."""

    def feature_channels(self, layer: int) -> int: ...

    def features(self, codes, layers, *, noise_mode="none", key=None, dtype=None) -> dict:
        """{layer: [N, r, r, C]} for codes of segment_space."""

    def sample_codes(self, num: int, seed: int) -> np.ndarray:
        """Random samples' codes of segment_space (numpy)."""

    def noise_buffers(self) -> dict:
        """{conv layer: its constant noise}; {} for a generator without noise."""

    def replace(self, **changes) -> "Generator": ...


@runtime_checkable
class WSpaceGenerator(Generator, Protocol):
    """A generator with "w" in its latent_spaces (StyleGAN2): the mapping, W, W+ and StyleSpace. The
    library uses these members only where latent_spaces says so."""

    w_avg: Any
    w_dim: int
    num_ws: int

    def mapping(self, z, *args, **kwargs) -> Any: ...

    def to_ws(self, codes, space: str) -> Any:
        """W+ codes [N, num_ws, w_dim] from codes of `space`."""

    def styles_from_ws(self, ws) -> dict:
        """StyleSpace: {layer: [N, channels]}."""

    def synthesis_from_styles(self, styles, **kwargs) -> Any: ...

    def with_noise(self, noise: dict) -> "WSpaceGenerator":
        """Drawing with `noise` in place of its constant buffers (noise_buffers() not empty)."""

    def with_label(self, label: int) -> "WSpaceGenerator":
        """Bound to class `label` (num_classes > 0)."""


FEATURES_PROTOCOL = ("segment_space", "feature_layers", "feature_channels", "features", "sample_codes")


def offers_features(generator) -> bool:
    """Whether an object offers what the segment generator G^S needs (FEATURES_PROTOCOL); true of every
    `Generator`."""
    return isinstance(generator, Generator) or all(hasattr(generator, name) for name in FEATURES_PROTOCOL)


def require_generator(generator) -> None:
    """ConfigError unless `generator` implements `Generator` (a check at the library's edge)."""
    if not isinstance(generator, Generator):
        missing = [n for n in _MEMBERS if not hasattr(generator, n)]
        raise ConfigError(f"{type(generator).__name__} is not a generator: it lacks {', '.join(missing[:6])}")


_MEMBERS = tuple(sorted(set(Generator.__annotations__) | {
    n for n, v in vars(Generator).items() if callable(v) and not n.startswith("_")}))


def fingerprint(generator) -> str:
    """The generator's identity: sha256 over its config and every parameter (name, shape, dtype,
    bytes). Caches (k-means heads, directions) and dataset records are keyed by it."""
    h = hashlib.sha256()
    config = generator.config.to_dict()
    h.update(json.dumps(config, sort_keys=True).encode())
    for name, value in sorted(flatten_tree(generator.params).items()):
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{name}|{a.shape}|{a.dtype.str}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def bind_label(generator, label):
    """The generator that inverting or sampling for class `label` uses.

    A conditional generator is bound to `label` (its mapping then uses that class and its w_avg is
    that class's mean w); one already bound keeps its class when `label` is None. An unconditional
    generator is returned as it is. ConfigError for a conditional generator without a class, or a
    label given to an unconditional one."""
    classes = generator.num_classes
    if label is None:
        if classes and generator.label is None:
            raise ConfigError(f"this generator is conditional ({classes} classes): give a class label "
                              f"0..{classes - 1} (label=K, --label=K)")
        return generator
    if not classes:
        raise ConfigError(f"a class label ({label!r}) applies only to a conditional generator; this one is "
                          "unconditional")
    return generator.with_label(label)
