"""Principal directions that a generator yields by itself, with no download: GANSpace (Härkönen et al.,
"GANSpace: Discovering Interpretable GAN Controls", NeurIPS 2020), unsupervised PCA.

- A StyleGAN2 (W space): PCA of w = mapping(z) over `samples` random z (`sample_ws`). Direction k is
  sigma_k * v_k, shape (w_dim,): v_k the k-th principal axis of W, sigma_k the standard deviation of the
  samples along it. Such a direction moves every W+ row; a layer range restricts it (GANSpace applies
  its components to chosen layers: early rows change pose and shape, late rows colour).
- A z-space generator (the demo DCGAN): PCA of an early feature layer (the first block's output,
  4 x 4 x channels), carried back to z by linear regression, GANSpace's method for BigGAN: with x_j the
  PCA coordinates of sample j's features, U = argmin_U sum_j ||U x_j - z_j||^2, and direction k is column
  k of U, normalised, times the standard deviation of the z samples along it (about 1, as z ~ N(0, I)).
In both cases strength 1 moves a code by one standard deviation of the generator's own latent
distribution along the direction; strength 3 is a large, visible edit.

Computed once per generator and cached under files.cache_root()/directions, keyed by the generator's
fingerprint, the number of samples and the seed. A cache entry is an ordinary directions folder
(direction_00.npy, ..., directions.json), the format `write_directions` (bin/directions) also writes,
with a preview sheet there.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..files import atomic_path, cache_root, check_writable, read_json_record
from ..generators.protocol import fingerprint as generator_fingerprint
from ..generators.stylegan2 import sample_ws
from ..io import save_png
from ..progress import Progress
from .render import render_segments
from .sheets import tile_sheet
from .spaces import direction_shape, direction_space

DEFAULT_SAMPLES = {"w": 20_000, "z": 10_000}  # W: cheap 512-d samples; z: 8192-d features each
CACHE_COMPONENTS = 20  # components a cache entry holds (more if a larger index is asked for)
FEATURE_RESOLUTION = 4  # z-space generators: PCA of the first block's output
BATCH = 1000
EXACT_MAX_DIM = 2048  # exact PCA (covariance eigendecomposition) up to this many dimensions
POWER_ITERATIONS = 6
RECORD_NAME = "directions.json"
DIRECTIONS_KIND = "directions folder"
FORMAT = 1
PREVIEW_STRENGTHS = (-3, -2, -1, 0, 1, 2, 3)
PER_DIRECTION = ("explained_variance", "std", "feature_std")  # record lists with one entry per direction


@dataclasses.dataclass(frozen=True)
class Directions:
    """directions: float32 [K, *direction shape], strength 1 = one standard deviation along each;
    record: method, space, explained variance, standard deviations, generator fingerprint, samples."""

    directions: np.ndarray
    record: dict


# ---------------------------------------------------------------------------------------- PCA
def principal_components(x, k: int, *, seed: int = 0, exact=None):
    """The k leading principal axes of the rows of x [N, D] -> (mean [D], axes [k, D] orthonormal rows,
    variances [k] along them, total variance), variances as population variances (divided by N). Each
    axis's sign is fixed: its largest-magnitude entry is positive. exact (default: D <= 2048): the
    eigendecomposition of the covariance in float64; else a randomized SVD (Halko, Martinsson and Tropp
    2011) with power iterations, in float32."""
    x = np.asarray(x, np.float32)
    n, d = x.shape
    if not 1 <= k <= min(n - 1, d):
        raise ConfigError(f"cannot take {k} principal components of {n} samples of dimension {d}")
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x - mean.astype(np.float32)
    total = float(np.einsum("ij,ij->", xc, xc, dtype=np.float64) / n)
    if exact if exact is not None else d <= EXACT_MAX_DIM:
        xd = xc.astype(np.float64)
        values, vectors = np.linalg.eigh(xd.T @ xd / n)
        order = np.argsort(-values)[:k]
        axes, variances = vectors[:, order].T, values[order]
    else:
        q = np.linalg.qr(xc @ np.random.RandomState(seed).standard_normal((d, k + 16)).astype(np.float32))[0]
        for _ in range(POWER_ITERATIONS):
            q = np.linalg.qr(xc @ np.linalg.qr(xc.T @ q)[0])[0]
        _, s, vt = np.linalg.svd((q.T @ xc).astype(np.float64), full_matrices=False)
        axes, variances = vt[:k], s[:k] ** 2 / n
    axes = axes * np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])[:, None]
    return mean, axes.astype(np.float32), np.maximum(variances, 0.0), total


def pca_space(generator) -> str:
    """'w' (PCA of W) for a StyleGAN2, 'z' (features carried back to z) for a z-space generator with
    block `features`; ConfigError for anything else."""
    spaces = generator.latent_spaces
    if "w" in spaces:
        return "w"
    if direction_space(generator) == "z":
        return "z"
    raise ConfigError(f"principal directions need a StyleGAN2 (W space) or a z-space generator with block "
                      f"features; this {type(generator).__name__} has latent spaces {spaces}")


def max_components(generator, samples: int) -> int:
    dim = generator.w_dim if pca_space(generator) == "w" else _feature_dim(generator)
    return min(dim, samples - 1)


def _z_dim(generator) -> int:
    return direction_shape(generator)[0]


def _feature_dim(generator) -> int:
    shape = jax.eval_shape(_features, generator, jnp.zeros((1, _z_dim(generator)), jnp.float32)).shape
    return int(shape[1])


def _checked(generator, components, samples):
    """(space, samples, components) with the defaults filled in and the counts checked."""
    space = pca_space(generator)
    samples = DEFAULT_SAMPLES[space] if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ConfigError(f"samples must be an integer >= 2, got {samples!r}")
    limit = max_components(generator, samples)
    components = min(CACHE_COMPONENTS, limit) if components is None else components
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) or not 1 <= components <= limit:
        raise ConfigError(f"components must be 1..{limit} for this generator with {samples} samples, "
                          f"got {components!r}")
    return space, int(samples), int(components)


@jax.jit
def _features(generator, z):
    f = generator.features(z, (FEATURE_RESOLUTION,))[FEATURE_RESOLUTION]
    return f.reshape(f.shape[0], -1)


def _batch_seeds(samples: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 2**31 - 1, size=-(-samples // BATCH))


def _sample(generator, space, samples, seed, progress):
    """(codes [N, dim], what PCA runs on [N, D]): W samples twice, or z samples and their features."""
    codes, data = [], []
    bar = Progress(samples, unit="samples", enabled=progress)
    for i, s in enumerate(_batch_seeds(samples, seed)):
        if space == "w":
            w = sample_ws(generator, BATCH, int(s))[:, 0]  # rows are equal before truncation
            codes.append(w)
            data.append(w)
        else:
            z = np.random.RandomState(int(s)).standard_normal((BATCH, _z_dim(generator))).astype(np.float32)
            codes.append(z)
            data.append(np.asarray(_features(generator, jnp.asarray(z))))
        bar.update(min((i + 1) * BATCH, samples))
    return np.concatenate(codes)[:samples], np.concatenate(data)[:samples]


def compute_directions(generator, components: int, *, samples=None, seed: int = 0,
                       progress: bool = True) -> Directions:
    """The first `components` principal directions of the generator (see the module doc), computed
    now from `samples` random samples (default: 20,000 for W, 10,000 for z)."""
    space, samples, components = _checked(generator, components, samples)
    codes, data = _sample(generator, space, samples, seed, progress)
    _, axes, variances, total = principal_components(data, components, seed=seed)
    record = {"format": FORMAT, "method": "ganspace", "space": space, "samples": int(samples), "seed": seed,
              "components": int(components), "generator_fingerprint": generator_fingerprint(generator),
              "explained_variance": [float(v / total) for v in variances],
              "strength_unit": "one standard deviation of the generator's latent distribution along the "
                               "direction"}
    if space == "w":
        std = np.sqrt(variances)
        directions = axes * std[:, None].astype(np.float32)
        record["description"] = "PCA of W = mapping(z); direction k = std_k * axis_k"
    else:
        coords = (data - data.mean(axis=0)) @ axes.T  # [N, K] PCA coordinates of the features
        u = np.linalg.lstsq(coords.astype(np.float64), codes.astype(np.float64), rcond=None)[0]  # [K, z_dim]
        unit = u / np.linalg.norm(u, axis=1, keepdims=True)
        std = (codes @ unit.T).std(axis=0)
        directions = (unit * std[:, None]).astype(np.float32)
        record["description"] = (f"PCA of the {FEATURE_RESOLUTION}x{FEATURE_RESOLUTION} block features, carried "
                                 "back to z by linear regression; direction k = std_k * unit_k")
        record["feature_std"] = [float(v) for v in np.sqrt(variances)]
    record["std"] = [float(v) for v in std]
    record["shape"] = list(directions.shape[1:])
    return Directions(directions=directions, record=record)


# ---------------------------------------------------------------------------------------- folders
def save_directions(found: Directions, folder, *, preview=None, overwrite: bool = False) -> Path:
    """Write direction_00.npy ... (ordinary direction files), directions.json and, if given, the
    preview sheet preview.png into `folder` (atomically; an existing directions folder this project
    wrote is replaced only with overwrite=True)."""
    folder = Path(folder)
    with atomic_path(folder, is_dir=True, overwrite=overwrite, kind=DIRECTIONS_KIND) as tmp:
        for k, d in enumerate(found.directions):
            np.save(tmp / f"direction_{k:02d}.npy", d)
        (tmp / RECORD_NAME).write_text(json.dumps(found.record, indent=1) + "\n")
        if preview is not None:
            save_png(tmp / "preview.png", preview)
    return folder


def load_directions(folder, generator=None, *, fingerprint=None) -> Directions:
    """A directions folder written by `save_directions`; with `generator` (or its `fingerprint`),
    checked to be its own."""
    folder = Path(folder)
    record = read_json_record(folder / RECORD_NAME, error=ConfigError)
    if record.get("format") != FORMAT or not isinstance(record.get("components"), int):
        raise ConfigError(f"{folder / RECORD_NAME} is not a directions record of format {FORMAT}")
    if fingerprint is None and generator is not None:
        fingerprint = generator_fingerprint(generator)
    if fingerprint is not None and record.get("generator_fingerprint") != fingerprint:
        raise ConfigError(f"{folder} holds the directions of another generator")
    arrays = []
    for k in range(record["components"]):
        try:
            arrays.append(np.load(folder / f"direction_{k:02d}.npy", allow_pickle=False))
        except (OSError, ValueError, EOFError) as e:
            raise ConfigError(f"{folder}: cannot read direction {k}: {e}") from None
    if any(a.shape != tuple(record.get("shape", ())) or a.dtype != np.float32 for a in arrays):
        raise ConfigError(f"{folder}: direction files do not match their record")
    return Directions(directions=np.stack(arrays), record=record)


def _first(found: Directions, k: int) -> Directions:
    """The first k directions, with the record's per-direction lists cut to match."""
    record = {key: (v[:k] if key in PER_DIRECTION else v) for key, v in found.record.items()}
    return Directions(found.directions[:k], dict(record, components=k))


def directions_cache_dir(cache_dir=None) -> Path:
    """`cache_dir`, else the directions/ folder of the project's cache (see files.cache_root)."""
    return Path(cache_dir) if cache_dir is not None else cache_root() / "directions"


def principal_directions(generator, components=None, *, samples=None, seed: int = 0, cache_dir=None) -> Directions:
    """The first `components` (default 20, fewer if the generator has fewer dimensions) principal
    directions: loaded from the cache, or computed once and cached. The cache entry is named by the
    generator's fingerprint, the space, samples, seed and the number of components it holds."""
    space, samples, want = _checked(generator, components, samples)
    held = max(want, min(CACHE_COMPONENTS, max_components(generator, samples)))
    fp = generator_fingerprint(generator)
    entry = directions_cache_dir(cache_dir) / f"{fp[:16]}-pca-{space}-n{samples}-seed{seed}-k{held}"
    if (entry / RECORD_NAME).is_file():
        try:
            return _first(load_directions(entry, fingerprint=fp), want)
        except ConfigError as e:
            warnings.warn(f"recomputing: the cached principal directions are unusable ({e})", stacklevel=2)
    print(f"computing this generator's principal directions once ({samples} samples; cached in {entry.parent})",
          file=sys.stderr)
    found = compute_directions(generator, held, samples=samples, seed=seed)
    try:
        save_directions(found, entry, overwrite=True)  # the cache's own entry, unusable or raced
    except (OSError, ConfigError) as e:
        warnings.warn(f"could not cache the principal directions at {entry}: {e}", stacklevel=2)
    return _first(found, want)


def principal_direction(generator, k: int, *, samples=None, seed: int = 0, cache_dir=None) -> np.ndarray:
    """Direction `pca:k`: the k-th principal direction (0 = most variance), strength 1 = one std."""
    _, samples, _ = _checked(generator, None, samples)
    limit = max_components(generator, samples)
    if not 0 <= k < limit:
        raise ConfigError(f"pca:{k}: this generator has principal directions pca:0 .. pca:{limit - 1}")
    return principal_directions(generator, k + 1, samples=samples, seed=seed, cache_dir=cache_dir).directions[k]


# ---------------------------------------------------------------------------------------- preview
def preview_sheet(generator, found: Directions, strengths=PREVIEW_STRENGTHS) -> np.ndarray:
    """uint8 sheet: one row per direction, one column per strength, each tile the generator's starting
    code (w_avg for a StyleGAN2, the fixed start z of the demo DCGAN) moved along the direction."""
    from ..io import to_uint8

    space = direction_space(generator)
    base = np.asarray(generator.initial_codes(space, 1), np.float32)[0]
    s = np.asarray(strengths, np.float32).reshape((-1,) + (1,) * base.ndim)
    rows = [list(to_uint8(np.asarray(render_segments(generator, base + s * np.broadcast_to(d, base.shape),
                                                      space)))) for d in found.directions]
    labels = [f"pca:{k} {100 * v:.1f}%" for k, v in enumerate(found.record["explained_variance"])]
    return tile_sheet(rows, col_labels=[f"{v:g}" for v in strengths], row_labels=labels)


def write_directions(generator, output, components: int = 8, *, samples=None, seed: int = 0,
                     cache_dir=None, overwrite: bool = False) -> Directions:
    """bin/directions: the first `components` principal directions saved into `output` as ordinary
    direction files, with directions.json and preview.png (rows = directions, columns = strengths -3..3).
    A directions folder this project wrote is replaced only with `overwrite`; any other existing
    non-empty folder is refused (checked before the PCA)."""
    output = Path(output)
    check_writable(output, overwrite, is_dir=True, kind=DIRECTIONS_KIND)
    found = principal_directions(generator, components, samples=samples, seed=seed, cache_dir=cache_dir)
    save_directions(found, output, preview=preview_sheet(generator, found), overwrite=overwrite)
    return found
