"""The `masks=` option of invert(), bin/invert, bin/invert_dataset (and the segmenter bin/edit recomputes
masks with), resolved into a mask source, and the record of that source kept in every result.

One vocabulary: masks = 'segmenter' (G^S, the paper's method; the default for a generator that offers its
features) | 'logits' | 'layout' | mask files | an array or label map | a ready mask source; segmenter =
a trained head's directory (bin/train_segmenter) or a `Segmenter`, else the k-means head cached per
generator. 'kmeans' is an alias of 'segmenter'. Whether the masks are learned: `learn` (learn_masks),
one rule for every source (`learns`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import io, paths
from ..errors import ConfigError, ImageError
from ..generators.protocol import fingerprint as generator_fingerprint
from ..generators.protocol import offers_features
from .segmenter import MASK_SMOOTHING, Segmenter, kmeans_segmenter, load_segmenter, segmenter_identity
from .sources import FixedMasks, default_layout, logit_masks_from, masks_from_labels, normalize_masks

MASK_KINDS = ("segmenter", "logits", "layout")
MASK_ALIASES = {"kmeans": "segmenter"}
KMEANS_SEED = 0  # the k-means head is fitted once per generator and n (the inversion seed moves the layout)


@dataclasses.dataclass(frozen=True, eq=False)
class MaskSettings:
    """An inversion's masks as one object (the `masks=` argument of the drivers; a bare value is its `source`).

    source: what `make_mask_source` takes (None: the generator's default, G^S where it offers features).
    segmenter: a trained head for source "segmenter" (a bin/train_segmenter directory or a `Segmenter`).
    learn: whether the masks are optimised; None: the source's own default (make_mask_source).
    static: the static mask S^X of the paper's eq. 3, [H, W] in [0, 1] or a mask file (1: the composite keeps
        the target there); for a batch, a list with one entry (or None) per image."""
    source: Any = None
    segmenter: Any = None
    learn: bool | None = None
    static: Any = None


def as_mask_settings(masks) -> MaskSettings:
    return masks if isinstance(masks, MaskSettings) else MaskSettings(source=masks)


def mask_kind(masks, generator=None) -> str | None:
    """The name behind a `masks=` value (None -> the default for `generator`), or None for anything else
    (arrays, files already read, mask sources)."""
    if masks is None:
        return "segmenter" if generator is not None and offers_features(generator) else "logits"
    if isinstance(masks, str):
        kind = MASK_ALIASES.get(masks, masks)
        if kind not in MASK_KINDS:
            raise ConfigError(f"masks must be one of {', '.join(MASK_KINDS)} (or 'kmeans'), mask files, an array "
                              f"or a mask source; got {masks!r}")
        return kind
    return None


# Whether a source's masks are learned when `learn` is None: its own default.
LEARNED_BY_DEFAULT = {"segmenter": True, "logits": True, "layout": False, "user": False}


def learns(kind: str, learn: bool | None, n: int) -> bool:
    """The one rule of `learn` (invert()'s learn_masks, bin/invert's --learn_masks) for a source `kind`
    ('segmenter', 'logits', 'layout' or 'user'): True learns the masks, False keeps them fixed, None takes
    the source's own default (LEARNED_BY_DEFAULT: G^S's code X^S and 'logits' learned, 'layout' and user
    masks fixed). One segment is the single all-ones mask, fixed. Refused (ConfigError): learning one
    segment, fixed 'logits' (that is 'layout') and learned 'layout' (that is 'logits')."""
    if learn is not None and not isinstance(learn, (bool, np.bool_)):
        raise ConfigError(f"learn_masks must be True, False or None (each source's default), got {learn!r}")
    if n == 1:
        if learn:
            raise ConfigError("one segment has the single all-ones mask, there is nothing to learn: leave "
                              "learn_masks unset or use more segments")
        return False
    if learn is None:
        return LEARNED_BY_DEFAULT[kind]
    if kind == "logits" and not learn:
        raise ConfigError("masks='logits' are learned by definition: for the same layout kept fixed, pass "
                          "masks='layout'")
    if kind == "layout" and learn:
        raise ConfigError("masks='layout' is the fixed layout: for the layout learned, pass masks='logits'")
    return bool(learn)


def make_mask_source(masks, n: int, resolution: int, *, seed: int = 0, learn: bool | None = None,
                     generator=None, segmenter=None):
    """Resolve the `masks=` option of invert():
    - None: 'segmenter' for a generator that offers its features (StyleGAN2, the demo DCGAN), else 'logits';
    - "segmenter" (alias "kmeans"): the segment generator G^S, S = G^S(X^S), with its code X^S learned
      together with the image codes (frozen with learn=False). Its head is `segmenter` (a directory from
      bin/train_segmenter, or a `Segmenter`; `learn` decides whether its X^S is learned), else the
      unsupervised k-means head of `generator`, fitted once per generator and n, then cached (see
      segmenter/kmeans.py);
    - "logits": learnable 16x16 logits starting at the default layout;
    - "layout": the default layout (soft Voronoi), fixed;
    - an array [n, H, W] (soft or hard) or a label map [H, W]: user masks (normalised), fixed, or learned
      (as logits starting at them) with learn=True;
    - any object with init()/masks(): used as is (what it learns is its own: `learn` must stay None).
    With n == 1 every named choice is the single all-ones mask. `learns` is the rule for `learn`."""
    if hasattr(masks, "init") and hasattr(masks, "masks"):
        if learn is not None:
            raise ConfigError(f"a ready mask source ({type(masks).__name__}) decides what it learns: leave "
                              "learn_masks unset")
        return masks
    kind = mask_kind(masks, generator)
    if segmenter is not None and kind != "segmenter":
        raise ConfigError(f"a segmenter applies to masks='segmenter', not to masks={masks!r}")
    learned = learns(kind or "user", learn, n)
    if n == 1 and kind is not None:
        return FixedMasks(jnp.ones((1, resolution, resolution), jnp.float32))
    if kind == "segmenter":
        if generator is None:
            raise ConfigError("masks='segmenter' needs the generator (pass generator= to make_mask_source)")
        return _segmenter(generator, n, segmenter, frozen=not learned)
    if kind is not None:
        layout = default_layout(n, resolution, seed=seed)
        return logit_masks_from(layout, resolution) if learned else FixedMasks(jnp.asarray(layout))
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = masks_from_labels(arr, n)
    if arr.ndim != 3 or arr.shape[1:] != (resolution, resolution):
        raise ImageError(f"masks must be [n, {resolution}, {resolution}] or a label map "
                         f"[{resolution}, {resolution}], got {arr.shape}")
    if arr.shape[0] != n:
        raise ConfigError(f"{arr.shape[0]} masks given for {n} segments")
    arr = normalize_masks(arr)
    return logit_masks_from(arr, resolution) if learned else FixedMasks(jnp.asarray(arr))


def _segmenter(generator, n, segmenter, *, frozen):
    if segmenter is None:
        return kmeans_segmenter(generator, n, seed=KMEANS_SEED, frozen=frozen)
    seg = segmenter if isinstance(segmenter, Segmenter) else load_segmenter(segmenter, generator, frozen=frozen)
    if seg.segments != n:
        name = "the segmenter" + ("" if isinstance(segmenter, Segmenter) else f" {segmenter}")
        raise ConfigError(f"{name} makes {seg.segments} segments, not {n}: pass segments={seg.segments} or "
                          "another segmenter")
    if seg.frozen != frozen:
        seg = seg.freeze(frozen)
    return seg


def mask_source_record(masks, source, generator, n: int, *, segmenter=None) -> dict:
    """What a result records about its masks (settings["masks"]), given the `masks=` value, the source
    built from it and n: the kind ('segmenter', 'logits', 'layout', 'user', 'single', or the class of a
    ready mask source) and whether they were learned; for G^S also the head kind, the segmenter's identity
    (sha256 of its head), where it came from (its directory, the k-means cache, or 'object' for a
    `Segmenter` passed in) and the generator's fingerprint."""
    given = hasattr(masks, "init") and hasattr(masks, "masks")
    learned = bool(jax.tree_util.tree_leaves(source.init(n)))
    if isinstance(source, Segmenter):
        if given or isinstance(segmenter, Segmenter):
            origin = "object"
        else:
            origin = ("kmeans cache" if segmenter is None else paths.as_path(segmenter) if paths.is_remote(segmenter)
                      else str(Path(segmenter).resolve()))
        record = {"kind": "segmenter", "head": source.head.kind, "segmenter": segmenter_identity(source),
                  "from": origin, "segments": source.segments, "layers": list(source.layers),
                  "smoothing": source.smoothing, "hardening": source.hardening,
                  "harden_until": source.harden_until, "learned": learned,
                  "generator": generator_fingerprint(generator)}
        if origin == "kmeans cache":
            record["seed"] = KMEANS_SEED
        return record
    if given:
        return {"kind": type(source).__name__, "learned": learned}
    kind = mask_kind(masks, generator) if masks is None or isinstance(masks, str) else None
    if kind is None:
        return {"kind": "user", "learned": learned}
    return {"kind": "single" if n == 1 else kind, "learned": learned}


def segmenter_for_result(record, generator, segments: int, *, segmenter=None, frozen=False) -> Segmenter:
    """The segmenter that made a result's masks (its settings["masks"] `record`), to recompute them for a
    moved X^S: `segmenter` (a directory) if given, else the one recorded (a directory, or the k-means
    cache). Refused (ConfigError) when the result's masks did not come from a segmenter, when it was made
    with another generator, or when the segmenter is not the one recorded."""
    if not isinstance(record, dict) or record.get("kind") != "segmenter":
        kind = record.get("kind") if isinstance(record, dict) else None
        raise ConfigError(f"this result's masks came from {kind or 'an unrecorded source'}, not from a segment "
                          "generator: there is no segment code for the masks to follow")
    have = generator_fingerprint(generator)
    if record.get("generator") != have:
        raise ConfigError(f"this result was made with another generator (sha256 {str(record.get('generator'))[:12]}..., "
                          f"this one is {have[:12]}...); pass the generator it was made with")
    if segmenter is None and record.get("from") not in (None, "kmeans cache", "object"):
        segmenter = record["from"]
    if segmenter is None and record.get("head") != "kmeans":
        raise ConfigError("this result's segmenter was not saved with it; pass its directory (--segmenter=DIR)")
    seg = (load_segmenter(segmenter, generator, frozen=frozen) if segmenter is not None else
           kmeans_segmenter(generator, segments, layers=record.get("layers"), seed=record.get("seed", KMEANS_SEED),
                            smoothing=record.get("smoothing", MASK_SMOOTHING), frozen=frozen))
    if segmenter_identity(seg) != record.get("segmenter"):
        where = f"{segmenter}" if segmenter is not None else "the k-means head in the cache"
        raise ConfigError(f"{where} is not the segmenter that made this result (head sha256 "
                          f"{segmenter_identity(seg)[:12]}..., the result records {str(record.get('segmenter'))[:12]}...)")
    # the annealing the result's masks ended with (results from before annealing record none: 1, none)
    return seg.with_hardening(record.get("hardening", 1.0), record.get("harden_until", 1.0))


def parse_mask_spec(spec, segments: int, resolution: int):
    """A command line's --masks value: a kind name ('segmenter', 'logits', 'layout', alias 'kmeans') stays
    a name; one PNG is a label map; several comma-separated PNGs are one mask per segment."""
    if spec is None or spec in MASK_KINDS or spec in MASK_ALIASES:
        return spec
    paths = [p for p in str(spec).split(",") if p]
    if len(paths) == 1 and not Path(paths[0]).exists():
        raise ConfigError(f"--masks={spec}: neither a mask kind ({', '.join(MASK_KINDS)}) nor an existing file")
    if len(paths) == 1:
        return io.load_label_map(paths[0], resolution)
    if len(paths) != segments:
        raise ConfigError(f"--masks lists {len(paths)} files for --segments={segments}")
    return np.stack([io.load_mask(p, resolution) for p in paths])
