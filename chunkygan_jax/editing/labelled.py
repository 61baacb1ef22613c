"""Directions from labelled samples (after InterFaceGAN: Shen et al., "Interpreting the Latent Space of
GANs for Semantic Face Editing", CVPR 2020): a linear classifier separates the codes of samples that have
an attribute from those that lack it, and its unit normal is the attribute's direction.

- The codes: sample `seed` is `generator.sample_codes(1, seed)[0]` (what a grid of samples shows); the
  fit runs in W for a StyleGAN2 (every row of a sample's W+ code is the same w) and in z for a z-space
  generator (the demo DCGAN).
- The prior: for a z-space generator the fit runs by default in the span of its first 20 principal
  directions (`pca:0..19`, `principal.principal_directions`, cached per generator): directions along
  which the generator's own samples vary most. From few labels a fit in all of z (100-d for the demo
  DCGAN) overfits; in the span it recovers pixel properties far better (bench/labelled_directions.py).
  The basis comes from the generator's samples, never from the labels, so the cross-validation stays
  honest. `components=0` fits in the full space (an attribute outside the span needs it, and many
  labels), the default in W, where the span did not help the test StyleGAN2; `components=K` asks for K.
- The classifier: L2-regularised logistic regression, fitted by Newton's method in JAX on codes centred
  and divided by one overall scale (so the penalty treats every direction of the span alike). Every
  cross-validation fold and the final fit run as one vmapped program.
- The direction: sigma * n, with n the unit normal (pointing to label 1, "has the attribute") and sigma
  the standard deviation along n of 2,000 of the generator's own samples (not of the labelled codes,
  whose spread along n the fit itself inflates), so strength 1 is one standard deviation of the
  generator's latent distribution, as for `pca:K`. A StyleGAN2 direction is (num_ws, w_dim): the rows of the layer range hold it, the others 0.
- Held-out accuracy: stratified k-fold cross-validation (k = 5, fewer when a class has fewer labels), the
  folds dealt from the codes themselves, never from the labels' order.
- The samples to label (`panel_seeds`, what the editor's panel shows): not i.i.d. seeds but, of every 400
  consecutive seeds, the 40 spread farthest apart over the generator's first 10 principal directions; from
  20 labels they generalise better (bench/labelled_twenty.py). A sample is still the sample of its seed.
Saved as an ordinary .npy (any front end resolves it), a JSON sidecar NAME.json (name, generator
fingerprint, labels, accuracy) and optionally a preview strip NAME.png.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..files import atomic_path, check_writable
from ..generators.protocol import fingerprint as generator_fingerprint
from ..io import save_png, to_uint8
from .principal import PREVIEW_STRENGTHS, principal_directions
from .render import render_segments
from .sheets import tile_sheet
from .spaces import direction_rows, direction_shape, direction_space

FORMAT = 1
KIND = "labelled direction"
MIN_PER_CLASS = 4
FOLDS = 5
NEWTON_STEPS = 25
MAX_LABELS = 100_000
MAX_LABELS_BYTES = 8 << 20
SEED_LIMIT = 2**32  # numpy RandomState seeds
# The fit's default span: the generator's first K principal directions (0: the full space). Measured by
# bench/labelled_directions.py: the span of 20 helps the demo DCGAN's z; in W of the (random-weight) test
# StyleGAN2 it did not, so W keeps the full space unless asked.
PRIOR_COMPONENTS = {"z": 20, "w": 0}
# The L2 penalty times the number of labels (scikit-learn's C = 1 / PENALTY). From 20 labels of the demo
# generator 10 gained at most 0.015 of accuracy on fresh samples and an inner cross-validation over
# 0.1..100 no more (bench/labelled_twenty.py); in W of the test StyleGAN2 10 pulled the normal off a known
# truth, so 1 stays.
PENALTY = 1.0
STD_SAMPLES, STD_SEED = 2000, 123  # the generator's own samples that measure a standard deviation
# The panel's samples: SPREAD_PICKS of every SPREAD_POOL consecutive seeds, spread over the generator's
# first SPREAD_COMPONENTS principal directions (`panel_seeds`). Blocks are cached per generator.
SPREAD_POOL, SPREAD_PICKS, SPREAD_COMPONENTS = 400, 40, 10
_SPREAD_CACHE: dict = {}


@dataclasses.dataclass(frozen=True)
class LabelledDirection:
    """direction: float32 of the generator's direction shape, strength 1 = one standard deviation;
    record: the sidecar (name, fingerprint, labels, accuracy, ...)."""

    direction: np.ndarray
    record: dict


# ---------------------------------------------------------------------------------------- labels
def _label(value, where):
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    raise ConfigError(f"{where}: a label is 1 / true (has the attribute) or 0 / false, got {value!r}")


def _seed(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{where}: a seed is an integer 0..{SEED_LIMIT - 1}, got {value!r}")
    return value


def parse_labels(data, where="labels") -> tuple[np.ndarray, np.ndarray, str | None]:
    """A labels record -> (seeds int64 [N], labels int32 [N] of 0/1, name or None). The record is a list
    of [seed, label] pairs or {"seed": s, "label": l} objects, or {"name": ..., "labels": that list}."""
    name = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"name", "labels"})
        if unknown or "labels" not in data:
            raise ConfigError(f"{where}: expected {{\"name\": ..., \"labels\": [[seed, label], ...]}}"
                              + (f"; unknown keys {unknown[:3]}" if unknown else ""))
        name = data.get("name")
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 200):
            raise ConfigError(f"{where}: name must be a string of 1..200 characters")
        data = data["labels"]
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of [seed, label] pairs")
    if len(data) > MAX_LABELS:
        raise ConfigError(f"{where}: {len(data)} labels; at most {MAX_LABELS}")
    seeds, labels = [], []
    for i, item in enumerate(data):
        at = f"{where}: item {i}"
        if isinstance(item, dict) and set(item) == {"seed", "label"}:
            item = [item["seed"], item["label"]]
        if not isinstance(item, list) or len(item) != 2:
            raise ConfigError(f"{at}: expected [seed, label] or {{\"seed\": s, \"label\": l}}, got {item!r:.60}")
        seeds.append(_seed(item[0], at))
        labels.append(_label(item[1], at))
    if len(set(seeds)) != len(seeds):
        dup = next(s for s in seeds if seeds.count(s) > 1)
        raise ConfigError(f"{where}: seed {dup} is labelled more than once")
    return np.asarray(seeds, np.int64), np.asarray(labels, np.int32), name


def read_labels(path):
    """`parse_labels` of a JSON file (bounded in size)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labels file not found: {path}")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_LABELS_BYTES >> 20} MiB; not a labels file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a JSON labels file ({e})") from None
    return parse_labels(data, str(path))


# ---------------------------------------------------------------------------------------- codes
def sample_code(generator, seed: int) -> np.ndarray:
    """Sample `seed`'s code in the fit space: w [w_dim] for a StyleGAN2, z [z_dim] for a z-space one."""
    code = np.asarray(generator.sample_codes(1, int(seed))[0], np.float32)
    return code[0] if direction_space(generator) == "w+" else code


def _spread_block(generator, fp: str, block: int) -> list[int]:
    """The SPREAD_PICKS seeds of block `block` (seeds block * SPREAD_POOL ...) in farthest-point order, in
    the generator's first SPREAD_COMPONENTS principal coordinates, each scaled to unit variance over the
    block: first the sample farthest from the block's mean, then each time the one farthest from all picked.
    fp: the generator's fingerprint (the cache's key)."""
    key = (fp, int(block))
    if key not in _SPREAD_CACHE:
        if len(_SPREAD_CACHE) >= 256:  # bounded: a long-running editor may page through many blocks
            _SPREAD_CACHE.clear()
        seeds = np.arange(block * SPREAD_POOL, (block + 1) * SPREAD_POOL)
        basis = prior_basis(generator, SPREAD_COMPONENTS)
        x = np.stack([sample_code(generator, s) for s in seeds])
        x = x @ basis if basis is not None else x
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
        picked = [int(np.argmax((x ** 2).sum(axis=1)))]
        dist = ((x - x[picked[0]]) ** 2).sum(axis=1)
        while len(picked) < SPREAD_PICKS:
            picked.append(int(np.argmax(dist)))
            dist = np.minimum(dist, ((x - x[picked[-1]]) ** 2).sum(axis=1))
        _SPREAD_CACHE[key] = [int(seeds[i]) for i in picked]
    return _SPREAD_CACHE[key]


def panel_seeds(generator, start: int, count: int) -> list[int]:
    """The seeds of the samples a labelling panel shows, positions start .. start+count-1: not i.i.d.
    seeds but samples spread over the generator's principal span, so that a few labels cover it (measured
    by bench/labelled_twenty.py). Position i is pick i % SPREAD_PICKS of block i // SPREAD_PICKS (see
    `_spread_block`); a block's seeds are its own, so every position is a distinct seed, the same one on
    every run."""
    if not (isinstance(start, int) and isinstance(count, int) and start >= 0 and 0 <= count <= 1000):
        raise ConfigError(f"panel positions: start >= 0 and count 0..1000, got {start!r}, {count!r}")
    if (start + count) // SPREAD_PICKS * SPREAD_POOL >= SEED_LIMIT:
        raise ConfigError(f"panel positions beyond {SEED_LIMIT // SPREAD_POOL * SPREAD_PICKS}")
    fp = generator_fingerprint(generator)  # once per call: it hashes every parameter
    return [_spread_block(generator, fp, i // SPREAD_PICKS)[i % SPREAD_PICKS] for i in range(start, start + count)]


def sample_images(generator, seeds) -> np.ndarray:
    """The images of the samples of `seeds` [k, H, W, 3] in about [-1, 1] (what a grid of samples shows)."""
    space = direction_space(generator)
    codes = np.stack([sample_code(generator, s) for s in seeds])
    if space == "w+":
        codes = np.broadcast_to(codes[:, None], (len(codes),) + direction_shape(generator))
    return np.asarray(render_segments(generator, codes, space))


def fit_codes(generator, codes, layers=None) -> np.ndarray:
    """Codes -> [N, dim] in the fit space: a StyleGAN2 takes W [N, w_dim] or [N, 1, w_dim], or W+
    [N, num_ws, w_dim] (the mean of the rows of the layer range); a z-space generator [N, z_dim]."""
    codes = np.asarray(codes, np.float32)
    shape = direction_shape(generator)
    if len(shape) == 2:
        if codes.ndim == 2 and codes.shape[1] == shape[1]:
            return codes
        if codes.ndim == 3 and codes.shape[2] == shape[1] and codes.shape[1] in (1, shape[0]):
            rows = direction_rows(generator, layers) if codes.shape[1] == shape[0] else ()
            return codes[(slice(None),) + rows].mean(axis=1)
    elif codes.ndim == 2 and codes.shape[1] == shape[0]:
        return codes
    raise ConfigError(f"codes of shape {codes.shape} do not fit this generator's direction space "
                      f"{direction_space(generator).upper()} {shape}")


# ---------------------------------------------------------------------------------------- the fit
def _newton(x, y, weights, penalty):
    """Weighted L2-regularised logistic regression -> (normal [D], bias); x [N, D], y and weights [N]."""
    n, d = x.shape
    xa = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
    ridge = jnp.concatenate([jnp.full((d,), penalty), jnp.zeros((1,))])
    total = weights.sum()

    def step(_, beta):
        p = jax.nn.sigmoid(xa @ beta)
        grad = xa.T @ (weights * (p - y)) / total + ridge * beta
        curv = weights * p * (1 - p) / total
        hess = (xa.T * curv) @ xa + jnp.diag(ridge + 1e-6)
        return beta - jnp.linalg.solve(hess, grad)

    beta = jax.lax.fori_loop(0, NEWTON_STEPS, step, jnp.zeros((d + 1,), x.dtype))
    return beta[:d], beta[d]


@jax.jit
def _fit_all(x, y, train, penalty):
    """One fit per row of `train` [F, N] (sample weights 0/1), vmapped."""
    return jax.vmap(_newton, in_axes=(None, None, 0, None))(x, y, train, penalty)


def _folds(labels, k, x, seed=0) -> np.ndarray:
    """Stratified fold index [N]: each class ordered by its codes' projection on a fixed random vector and
    dealt round-robin over k folds, so that the folds (and the held-out accuracy) do not depend on the
    order in which the labels were given. x: the codes [N, D]."""
    key = np.asarray(x, np.float64) @ np.random.RandomState(seed).standard_normal(np.shape(x)[1])
    fold = np.zeros(len(labels), np.int32)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        fold[idx[np.argsort(key[idx], kind="stable")]] = np.arange(len(idx)) % k
    return fold


def _class_counts(y, n) -> list[int]:
    """[negatives, positives] of 0/1 labels y [n]; ConfigError for other labels or too few of a class."""
    if y.shape != (n,) or not np.isin(y, (0, 1)).all():
        raise ConfigError(f"need one 0/1 label per code ({n}), got shape {y.shape}")
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < MIN_PER_CLASS:
        raise ConfigError(f"too few labels of a class: {counts[1]} with the attribute, {counts[0]} without; "
                          f"each class needs at least {MIN_PER_CLASS}")
    return counts


def prior_basis(generator, components) -> np.ndarray | None:
    """Orthonormal columns [D, K] spanning the generator's first K principal directions (pca:0..K-1,
    `principal_directions`, cached per generator), or None for the full space (components 0 or None)."""
    if components is None or components == 0:
        return None
    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) or components < 0:
        raise ConfigError(f"components must be an integer >= 0 (0: the full space), got {components!r}")
    dim = direction_shape(generator)[-1]
    if components >= dim:
        return None  # the span is the whole space
    found = principal_directions(generator, int(components))
    rows = found.directions.reshape(len(found.directions), -1, dim)[:, 0]  # a W+ direction repeats w
    return np.linalg.qr(rows.T.astype(np.float64))[0].astype(np.float32)


def default_components(generator) -> int:
    """The fit's default span for this generator: PRIOR_COMPONENTS of its fit space."""
    return PRIOR_COMPONENTS["w" if direction_space(generator) == "w+" else "z"]


def fit_direction(generator, codes, labels, *, layers=None, name="direction", penalty=None,
                  folds=FOLDS, components=None) -> LabelledDirection:
    """A direction from codes (see `fit_codes`) and their 0/1 labels (see the module doc). penalty: the
    L2 weight on the standardised codes (default PENALTY / N, scikit-learn's C = 1 / PENALTY).
    components: the fit runs in the span of the generator's first K principal directions (0 = the full
    space; default `default_components`: 20 in z, the full space in W)."""
    x = fit_codes(generator, codes, layers)
    y = np.asarray(labels)
    counts = _class_counts(y, len(x))
    rows = direction_rows(generator, layers)
    basis = prior_basis(generator, default_components(generator) if components is None else components)
    if basis is not None:
        x = x @ basis  # coordinates in the span: the basis comes from the generator, never the labels
    k = min(folds, min(counts))
    fold = _folds(y, k, x)
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean() / x.shape[1])) or 1.0
    xs = jnp.asarray((x - mean) / scale)
    train = np.concatenate([(fold != f)[None] for f in range(k)] + [np.ones((1, len(y)), bool)]).astype(np.float32)
    penalty = PENALTY / len(y) if penalty is None else float(penalty)
    normals, biases = (np.asarray(a, np.float64) for a in _fit_all(xs, jnp.asarray(y, jnp.float32),
                                                                   jnp.asarray(train), penalty))
    scores = np.einsum("fd,nd->fn", normals[:k], np.asarray(xs, np.float64)) + biases[:k, None]
    held_out = scores[fold, np.arange(len(y))] > 0
    accuracy = float((held_out == (y == 1)).mean())
    train_accuracy = float(((np.asarray(xs) @ normals[k] + biases[k] > 0) == (y == 1)).mean())
    norm = np.linalg.norm(normals[k])
    if not np.isfinite(norm) or norm == 0:
        raise ConfigError("the fit found no direction (the labelled codes do not vary)")
    unit = normals[k] / norm  # the normal in the original coordinates too: the scale is one scalar
    if basis is not None:
        unit = basis.astype(np.float64) @ unit  # back from the span's coordinates (orthonormal: still unit)
    population = fit_codes(generator, generator.sample_codes(STD_SAMPLES, STD_SEED))
    std = float((population @ unit).std())
    direction = np.zeros(direction_shape(generator), np.float32)
    direction[rows] = (std * unit).astype(np.float32)
    space = direction_space(generator)
    record = {"format": FORMAT, "kind": KIND, "name": name, "generator_fingerprint": generator_fingerprint(generator),
              "method": "logistic regression (L2, Newton's method)", "space": "w" if space == "w+" else space,
              "layers": [rows[0].start, rows[0].stop] if rows else None, "labels": len(y), "positives": counts[1],
              "negatives": counts[0], "folds": k, "accuracy": accuracy, "train_accuracy": train_accuracy,
              "std": std, "penalty": penalty, "components": 0 if basis is None else basis.shape[1],
              "strength_unit": "one standard deviation of the generator's latent distribution along the direction"}
    return LabelledDirection(direction=direction, record=record)


def direction_from_labels(generator, seeds, labels, *, layers=None, name="direction", **kw) -> LabelledDirection:
    """`fit_direction` on the samples of `seeds` (see `sample_code`); the record lists the seeds."""
    seeds = [_seed(int(s), "seeds") for s in np.asarray(seeds).reshape(-1)]
    _class_counts(np.asarray(labels), len(seeds))  # checked before sampling
    direction_rows(generator, layers)
    codes = np.stack([sample_code(generator, s) for s in seeds])
    found = fit_direction(generator, codes, labels, layers=layers, name=name, **kw)
    return dataclasses.replace(found, record=dict(found.record, seeds=seeds))


# ---------------------------------------------------------------------------------------- preview, files
def preview_strip(generator, found: LabelledDirection, seeds=(), strengths=PREVIEW_STRENGTHS) -> np.ndarray:
    """uint8 sheet: rows = the generator's starting code and the samples of `seeds`, columns = strengths."""
    space = direction_space(generator)
    base = np.asarray(generator.initial_codes(space, 1), np.float32)
    if len(seeds):
        samples = np.stack([sample_code(generator, s) for s in seeds])
        base = np.concatenate([base, np.broadcast_to(samples[:, None] if space == "w+" else samples,
                                                     (len(seeds),) + base.shape[1:])])
    s = np.asarray(strengths, np.float32).reshape((-1,) + (1,) * (base.ndim - 1))
    rows = [list(to_uint8(np.asarray(render_segments(generator, b + s * found.direction, space)))) for b in base]
    labels = ["start"] + [f"seed {v}" for v in seeds]
    return tile_sheet(rows, col_labels=[f"{v:g}" for v in strengths], row_labels=labels)


def sidecar_paths(output) -> tuple[Path, Path, Path]:
    """NAME.npy -> (NAME.npy, NAME.json, NAME.png)."""
    output = Path(output)
    if output.suffix != ".npy":
        raise ConfigError(f"a direction is written as a .npy file; got {output}")
    return output, output.with_suffix(".json"), output.with_suffix(".png")


def check_outputs(output, overwrite=False, preview=True, inputs=()):
    paths = sidecar_paths(output)
    for p in paths[: 3 if preview else 2]:
        check_writable(p, overwrite, inputs=inputs)
    return paths


def save_direction(found: LabelledDirection, output, *, preview=None, overwrite=False) -> Path:
    """NAME.npy (the direction), NAME.json (its record) and, if given, NAME.png (the preview strip),
    each written atomically; existing files are replaced only with overwrite."""
    npy, sidecar, png = check_outputs(output, overwrite, preview is not None)
    with atomic_path(npy, overwrite=overwrite) as tmp:
        np.save(tmp, found.direction)
    with atomic_path(sidecar, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(found.record, indent=1) + "\n")
    if preview is not None:
        save_png(png, preview, overwrite=overwrite)
    return npy


def write_labelled_direction(generator, labels_path, output, *, layers=None, name=None, overwrite=False,
                             preview_seeds=2, components=None) -> LabelledDirection:
    """bin/directions --from_labels: read the labels, fit, write NAME.npy, NAME.json and the preview
    NAME.png (the starting code and the first labelled sample of each class, strengths -3..3). The
    outputs are checked before the work. components: see `fit_direction` (None: its default)."""
    check_outputs(output, overwrite, inputs=(labels_path,))
    seeds, labels, given = read_labels(labels_path)
    found = direction_from_labels(generator, seeds, labels, layers=layers, name=name or given or Path(output).stem,
                                  components=components)
    shown = [int(seeds[labels == c][0]) for c in (1, 0) if (labels == c).any()][:preview_seeds]
    save_direction(found, output, preview=preview_strip(generator, found, shown), overwrite=overwrite)
    return found
