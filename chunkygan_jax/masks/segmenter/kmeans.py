"""The unsupervised head: spherical k-means over the generator's features of many random samples,
fitted once per generator, n, layers and seed, then cached (no annotation needed)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ...errors import CheckpointError, ConfigError
from ...files import cache_root
from ...generators.protocol import fingerprint as generator_fingerprint
from .features import _EPS, DEFAULT_NOISE_MODE, FEATURES_VERSION, pixel_features, resolve_layers
from .heads import MASK_SMOOTHING, KMeansHead, Segmenter, make_segmenter
from .store import RECORD_NAME, load_segmenter, save_segmenter

# T is set so that, at the median sampled pixel, the nearest centroid gets this many times the weight of
# the second nearest (0.9 vs 0.1 with two segments): soft enough for gradients to move the borders.
# Sharper heads fit real photos a little better but stop X^S from learning (docs/segmenter.md).
KMEANS_MEDIAN_ODDS = 9.0


@dataclasses.dataclass(frozen=True)
class KMeansSettings:
    samples: int = 64  # random generator samples
    pixels_per_sample: int = 256  # feature pixels drawn from each sample (bounds memory)
    iterations: int = 50
    restarts: int = 3
    batch_size: int = 8
    median_odds: float = KMEANS_MEDIAN_ODDS  # sets the temperature (above)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.partial(jax.jit, static_argnames=("layers", "noise_mode"))
def _sampled_features(generator, codes, index, layers, noise_mode):
    f = pixel_features(generator, codes, layers, noise_mode=noise_mode)
    f = f.reshape(f.shape[0], -1, f.shape[-1])
    return jnp.take_along_axis(f, index[..., None], axis=1)


def collect_features(generator, layers, settings: KMeansSettings, seed: int, noise_mode: str) -> np.ndarray:
    """phi at `pixels_per_sample` random pixels of each of `samples` random samples -> [N, D] float32."""
    layers = resolve_layers(generator, layers)
    h = max(layers)
    rng = np.random.RandomState(seed)
    codes = generator.sample_codes(settings.samples, seed)
    per = min(settings.pixels_per_sample, h * h)
    index = np.stack([rng.choice(h * h, per, replace=False) for _ in range(settings.samples)]).astype(np.int32)
    out = []
    for i in range(0, settings.samples, settings.batch_size):
        out.append(np.asarray(_sampled_features(generator, jnp.asarray(codes[i:i + settings.batch_size]),
                                                jnp.asarray(index[i:i + settings.batch_size]), layers,
                                                noise_mode)))
    x = np.concatenate(out).reshape(-1, out[0].shape[-1])
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(_EPS)


@functools.partial(jax.jit, static_argnames=("iterations",))
def _lloyd(x, c, iterations):
    """Spherical Lloyd iterations until the assignment stops changing (at most `iterations`). A cluster
    that empties is re-seeded at the j-th worst-fitting point (j = its index, so several never collide)."""
    k = c.shape[0]

    def body(state):
        c, labels, _, i = state
        sims = x @ c.T
        new = jnp.argmax(sims, axis=1)
        onehot = jax.nn.one_hot(new, k, dtype=x.dtype)
        sums = onehot.T @ x
        counts = onehot.sum(axis=0)
        worst = jax.lax.top_k(-jnp.max(sims, axis=1), k)[1]
        sums = jnp.where(counts[:, None] > 0, sums, x[worst])
        c = sums * jax.lax.rsqrt(jnp.sum(jnp.square(sums), axis=1, keepdims=True) + 1e-20)
        return c, new, jnp.any(new != labels) | jnp.any(counts == 0), i + 1

    init = (c, jnp.full((x.shape[0],), -1, jnp.int32), jnp.bool_(True), 0)
    c, _, _, _ = jax.lax.while_loop(lambda s: s[2] & (s[3] < iterations), body, init)
    return c, jnp.mean(jnp.max(x @ c.T, axis=1))


def spherical_kmeans(x: np.ndarray, k: int, *, iterations=50, restarts=3, seed=0):
    """Unit rows x [N, D] -> (unit centroids [k, D] ordered by cluster size, largest first, objective).
    k-means++ seeding on cosine distance (numpy RandomState(seed)); the best of `restarts` runs (mean
    cosine similarity to the nearest centroid) is kept."""
    if k > len(x):
        raise ConfigError(f"cannot make {k} clusters from {len(x)} feature pixels")
    x = np.asarray(x, np.float32)
    xj = jnp.asarray(x)
    rng = np.random.RandomState(seed)
    best = None
    for _ in range(restarts):
        c = np.empty((k, x.shape[1]), np.float32)
        c[0] = x[rng.randint(len(x))]
        closest = 1.0 - x @ c[0]
        for j in range(1, k):
            p = np.clip(closest.astype(np.float64), 0, None)
            p = p / p.sum() if p.sum() > 0 else np.full(len(x), 1.0 / len(x))
            c[j] = x[rng.choice(len(x), p=p)]
            closest = np.minimum(closest, 1.0 - x @ c[j])
        c, objective = _lloyd(xj, jnp.asarray(c), iterations)
        if best is None or float(objective) > best[1]:
            best = (np.asarray(c), float(objective))
    c, objective = best
    sizes = np.bincount((x @ c.T).argmax(axis=1), minlength=k)
    order = np.argsort(-sizes, kind="stable")
    return c[order], objective


def kmeans_temperature(x: np.ndarray, centroids: np.ndarray, odds: float = KMEANS_MEDIAN_ODDS) -> float:
    """T such that the median pixel's top-1 over top-2 weight is `odds`: T = median(s1 - s2) / ln(odds)."""
    if len(centroids) < 2:
        return 1.0
    sims = np.sort(x @ centroids.T, axis=1)
    gap = float(np.median(sims[:, -1] - sims[:, -2]))
    return max(gap, 1e-4) / math.log(odds)


def fit_kmeans(generator, segments: int, *, layers=None, seed: int = 0, settings: KMeansSettings | None = None,
               noise_mode: str = DEFAULT_NOISE_MODE, smoothing: float = MASK_SMOOTHING, frozen=False) -> Segmenter:
    """Fit the unsupervised head (deterministic for a seed); see `kmeans_segmenter` for the cached form."""
    if not isinstance(segments, (int, np.integer)) or segments < 1:
        raise ConfigError(f"segments must be an integer >= 1, got {segments!r}")
    settings = settings or KMeansSettings()
    layers = resolve_layers(generator, layers)
    x = collect_features(generator, layers, settings, seed, noise_mode)
    centroids, _ = spherical_kmeans(x, segments, iterations=settings.iterations, restarts=settings.restarts,
                                    seed=seed)
    head = KMeansHead(centroids=jnp.asarray(centroids, jnp.float32),
                      temperature=jnp.float32(kmeans_temperature(x, centroids, settings.median_odds)))
    return make_segmenter(generator, head, layers=layers, frozen=frozen, noise_mode=noise_mode, smoothing=smoothing)


def segmenter_cache_dir(cache_dir=None) -> Path:
    """`cache_dir`, else the segmenters/ folder of the project's cache (see files.cache_root)."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "segmenters"


def kmeans_segmenter(generator, segments: int, *, layers=None, seed: int = 0,
                     settings: KMeansSettings | None = None, noise_mode: str = DEFAULT_NOISE_MODE,
                     smoothing: float = MASK_SMOOTHING, cache_dir=None, frozen=False) -> Segmenter:
    """The k-means segmenter for this generator and n: loaded from the cache, or fitted once and cached.
    The entry's name holds the generator fingerprint, n, layers, seed and a hash of the fit settings."""
    settings = settings or KMeansSettings()
    layers = resolve_layers(generator, layers)
    fingerprint = generator_fingerprint(generator)
    fit = json.dumps({**settings.to_dict(), "noise_mode": noise_mode, "smoothing": smoothing,
                      "features": FEATURES_VERSION}, sort_keys=True)
    name = (f"{fingerprint[:16]}-kmeans-n{segments}-l{'_'.join(map(str, layers))}-seed{seed}-"
            f"{hashlib.sha256(fit.encode()).hexdigest()[:8]}")
    entry = segmenter_cache_dir(cache_dir) / name
    if (entry / RECORD_NAME).is_file():
        try:
            return load_segmenter(entry, generator, frozen=frozen, fingerprint=fingerprint)
        except CheckpointError as e:
            warnings.warn(f"refitting: the cached k-means segmenter is unusable ({e})", stacklevel=2)
    seg = fit_kmeans(generator, segments, layers=layers, seed=seed, settings=settings, noise_mode=noise_mode,
                     smoothing=smoothing, frozen=frozen)
    try:
        save_segmenter(seg, entry, fingerprint=fingerprint, info={"seed": seed, "fit": settings.to_dict()},
                       overwrite=True)
    except (OSError, CheckpointError) as e:
        warnings.warn(f"could not cache the k-means segmenter at {entry}: {e}", stacklevel=2)
    return seg
