"""What every image generator G^I offers, and its identity.

A generator is a pytree (a flax struct: static `config`, array `params`; `fingerprint` reads both) with
  resolution, latent_spaces, default_space,
  default_lambda_reg                 its weight of the codes' dispersion (StyleGAN2 1.0, the DCGAN 0),
  initial_codes(space, n)            the starting codes of n segments,
  synthesize(codes, space, *, noise_mode, key, dtype, remat)
                                     images [N, H, W, 3] in about [-1, 1] (the DCGAN accepts and ignores
                                     noise_mode, key and remat).
What the library uses only where a generator has it (read with hasattr/getattr):
  check_space(space)                 a specific error for a space it lacks (the DCGAN),
  prepare(dtype)                     the generator with its weight-only preprocessing done once, which
                                     the inversion's step then uses (StyleGAN2),
  w_avg, mapping                     for the mean-latent term and the W-space tools (StyleGAN2).
A generator that offers its intermediate features (what the segment generator G^S is built from) adds
FEATURES_PROTOCOL (`offers_features` checks these names):
  segment_space                      the space of the segment code X^S ('w+' StyleGAN2, 'z' DCGAN);
                                     X^S starts at initial_codes(segment_space, 1)[0],
  feature_layers                     the resolutions it offers features at,
  feature_channels(layer)            their channel counts,
  features(codes, layers, noise_mode=...)  {layer: [N, r, r, C]} for codes of segment_space,
  sample_codes(num, seed)            random samples' codes of segment_space (numpy);
and may set checkerboard_features (default False): whether features carry the period-2 pattern of
transposed convolutions (phi filters it out; see segmenter/features.py).
StyleGAN2 adds the W/W+/S conversions; the DCGAN works in z alone.
A conditional generator (StyleGAN2 with c_dim > 0) has num_classes > 0 and with_label(k); only a
generator bound to a class (`bind_label`) offers the protocol above.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..errors import ConfigError
from ..trees import flatten_tree

FEATURES_PROTOCOL = ("segment_space", "feature_layers", "feature_channels", "features", "sample_codes")


def offers_features(generator) -> bool:
    """Whether the generator offers what the segment generator G^S needs (FEATURES_PROTOCOL)."""
    return all(hasattr(generator, name) for name in FEATURES_PROTOCOL)


def fingerprint(generator) -> str:
    """The generator's identity: sha256 over its config and every parameter (name, shape, dtype,
    bytes). Caches (k-means heads, directions) and dataset records are keyed by it."""
    h = hashlib.sha256()
    config = generator.config.to_dict() if hasattr(generator.config, "to_dict") else repr(generator.config)
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
    classes = getattr(generator, "num_classes", 0)
    if label is None:
        if classes and generator.label is None:
            raise ConfigError(f"this generator is conditional ({classes} classes): give a class label "
                              f"0..{classes - 1} (label=K, --label=K)")
        return generator
    if not classes:
        raise ConfigError(f"a class label ({label!r}) applies only to a conditional generator; this one is "
                          "unconditional")
    return generator.with_label(label)
