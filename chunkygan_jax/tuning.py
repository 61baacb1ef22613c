"""Pivotal tuning after the segments: the generator's drawing weights learn the photo the codes cannot reach.

With an inversion's codes, masks (and X^S through them) frozen as pivots, each image gets its own small
change of the drawing weights (`deltas.py`: low-rank factors of the big tensors, full deltas of the small
ones), optimised with Adam against the inversion's objective on the composite:

    L = LPIPS(O, I) + l2_weight * mean((O - I)^2)
        + locality_weight * [LPIPS(G'(c_r), G(c_r)) + mean((G'(c_r) - G(c_r))^2)]

where G' is the tuned generator and c_r a code near a pivot: one of the image's segment codes moved by
`locality_radius` times the spread of the generator's codes towards a random sample's code (PTI's
locality regulariser), drawn anew each step. Noise stays constant. The mapping network never changes,
so W and its directions keep their meaning.

The B images of a batch run as one jitted step, vmapped over their deltas (each image renders with its
own generator). The loss is a sum over images, Adam is elementwise and each image draws its own
locality codes from (seed, step), so an image tunes the same alone or in any batch, up to
float summation order (which Adam can amplify where a gradient is near zero). A greyscale target
(three equal channels) is compared with the composite's luminance when its inversion was
(`grey_loss`), in the loss and in the LPIPS reported after tuning. With
`lpips_threshold`, an image whose LPIPS reaches it stops changing, and the loop ends when all have.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

try:  # jax >= 0.7
    from jax import shard_map
except ImportError:  # pragma: no cover
    from jax.experimental.shard_map import shard_map

from . import sharding
from .deltas import STORE_DTYPES, apply_delta, cast_delta, delta_bytes, init_delta, params_bytes
from .errors import ConfigError
from .generators.protocol import fingerprint
from .lpips import load_lpips, resize_for_lpips
from .masks.composite import composite, luminance_where_grey
from .noise import drawer
from .progress import Progress

LOCALITY_POOL = 256  # random samples' codes the locality term draws its directions from


@dataclasses.dataclass(frozen=True)
class TuningSettings:
    """Pivotal tuning's settings (defaults measured on real photos: docs/tuning.md)."""
    steps: int = 100
    lr: float = 0.01  # Adam's step as a fraction of each tensor's RMS (deltas.py)
    rank: int = 4  # of the low-rank factors; 0 stores every delta full
    l2_weight: float = 1.0
    locality_weight: float = 0.1
    locality_radius: float = 1.0  # in units of the spread of random samples' codes
    lpips_threshold: float | None = None  # stop an image's tuning once its LPIPS is at most this
    store: str = "float16"  # the delta's dtype on disk; the tuned result uses exactly the stored values
    seed: int = 0

    def validate(self) -> "TuningSettings":
        if not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ConfigError(f"tuning steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.rank, (int, np.integer)) or not 0 <= self.rank <= 1024:
            raise ConfigError(f"tuning rank must be an integer from 0 to 1024, got {self.rank!r}")
        for name in ("lr", "l2_weight", "locality_weight", "locality_radius"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"tuning {name} must be a finite number >= 0, got {v!r}")
        t = self.lpips_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 10):
            raise ConfigError(f"lpips_threshold must be a number in (0, 10), or None, got {t!r}")
        if self.store not in STORE_DTYPES:
            raise ConfigError(f"tuning store must be one of {', '.join(STORE_DTYPES)}, got {self.store!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def as_tuning(tune) -> TuningSettings | None:
    """invert()'s `tune=`: None, False or 0 (off), a number of steps, or TuningSettings."""
    if tune is None or tune is False or (isinstance(tune, (int, np.integer)) and not isinstance(tune, bool)
                                         and tune == 0):
        return None
    if isinstance(tune, TuningSettings):
        return tune.validate()
    if isinstance(tune, (int, np.integer)) and not isinstance(tune, bool):
        return TuningSettings(steps=int(tune)).validate()
    raise ConfigError(f"tune must be a number of steps, TuningSettings or None, got {tune!r}")


# ---------------------------------------------------------------------------------------- the step
def locality_pool(generator, space: str, num: int = LOCALITY_POOL, seed: int = 0):
    """(codes of `num` random samples in `space`, stacked on axis 0; their spread sqrt(E||c - mean||^2))."""
    samples = generator.sample_codes(num, seed)  # segment_space: W+ for StyleGAN2, z for the DCGAN
    if space in ("w", "s"):  # one w per sample (StyleGAN2's mapping gives the same w on every row)
        samples = samples[:, 0]
    codes = jax.vmap(lambda c: jax.tree_util.tree_map(lambda x: x[0], generator.initial_codes(space, 1, c)))(
        jnp.asarray(samples)) if space != generator.segment_space else jnp.asarray(samples)
    leaves = [np.asarray(x, np.float64).reshape(num, -1) for x in jax.tree_util.tree_leaves(codes)]
    flat = np.concatenate(leaves, axis=1)
    spread = float(np.sqrt(np.mean(np.sum(np.square(flat - flat.mean(0)), axis=1))))
    return codes, spread


def _tree_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def _near_code(pivots, pool, spread, radius, key):
    """One code `radius * spread` from a random pivot (segment code), towards a random pool sample."""
    k1, k2 = jax.random.split(key)
    n = jax.tree_util.tree_leaves(pivots)[0].shape[0]
    m = jax.tree_util.tree_leaves(pool)[0].shape[0]
    pivot = jax.tree_util.tree_map(lambda x: x[jax.random.randint(k1, (), 0, n)], pivots)
    sample = jax.tree_util.tree_map(lambda x: x[jax.random.randint(k2, (), 0, m)], pool)
    d = jax.tree_util.tree_map(lambda a, b: a - b, sample, pivot)
    scale = radius * spread / jnp.maximum(_tree_norm(d), 1e-12)
    return jax.tree_util.tree_map(lambda p, dd: (p + scale * dd)[None], pivot, d)


def hyperparameters(settings: TuningSettings) -> dict:
    """The settings a compiled step takes as arguments (changing them does not recompile)."""
    names = ("lr", "l2_weight", "locality_weight", "locality_radius")
    return {k: jnp.float32(getattr(settings, k)) for k in names} | {
        "threshold": jnp.float32(-1.0 if settings.lpips_threshold is None else settings.lpips_threshold)}


def with_noise(generator, noise):
    """`generator` drawing with a result's noise ({layer: [1, res, res]}), or as it is for None."""
    return generator if noise is None else drawer(generator, {"noise": noise})


def make_step(*, use_locality: bool, space: str, noise_mode: str, dtype: str, lpips_resolution, grey_loss: bool):
    """step(deltas, opt_state, nets, batch, step, hyper) -> (deltas, opt_state, parts), for B images at once.

    nets = (base generator, lpips); batch = target [B, H, W, 3], target_features, codes [B, n, ...],
    masks [B, n, H, W], static_mask (or absent), image_keys [B, 2] (each image's own PRNG key), pool,
    spread; hyper = hyperparameters(settings). parts: per-image lpips, l2, locality and total, all of
    the deltas before this step's update. grey_loss: a grey target is compared with the composite's
    luminance, as the inversion's objective does (masks.luminance_where_grey)."""
    optimizer = optax.adam(1.0)  # scaled by hyper["lr"] below, so that the lr is an argument
    synth = lambda g, c: g.synthesize(c, space, noise_mode=noise_mode, dtype=dtype)
    feats = lambda lp, x: lp.features(resize_for_lpips(x, lpips_resolution))

    def loss_fn(deltas, nets, batch, step, hyper):
        base, lpips = nets

        def one(delta, codes, noise, key):
            base = with_noise(nets[0], noise)  # a result's own optimised noise, if it has one
            tuned = apply_delta(base, delta)
            imgs = synth(tuned, codes)
            if not use_locality:
                return imgs, None, None
            near = _near_code(codes, batch["pool"], batch["spread"], hyper["locality_radius"],
                              jax.random.fold_in(key, step))
            return imgs, synth(tuned, near)[0], jax.lax.stop_gradient(synth(base, near)[0])

        imgs, near_tuned, near_base = jax.vmap(one)(deltas, batch["codes"], batch.get("noise"), batch["image_keys"])
        out = composite(imgs, batch["masks"], batch["target"], batch.get("static_mask"))
        if grey_loss:
            out = luminance_where_grey(out, batch["target"])
        lp = lpips.distance_from_features(feats(lpips, out), batch["target_features"])
        l2 = jnp.mean(jnp.square(out - batch["target"]), axis=(1, 2, 3))
        total = lp + hyper["l2_weight"] * l2
        parts = {"lpips": lp, "l2": l2}
        if use_locality:
            loc = lpips.distance_from_features(feats(lpips, near_tuned), feats(lpips, near_base)) + \
                jnp.mean(jnp.square(near_tuned - near_base), axis=(1, 2, 3))
            total = total + hyper["locality_weight"] * loc
            parts["locality"] = loc
        parts["total"] = total
        return jnp.sum(total), parts

    def step_fn(deltas, opt_state, nets, batch, step, hyper):
        (_, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(deltas, nets, batch, step, hyper)
        updates, opt_state = optimizer.update(grads, opt_state, deltas)
        # an image at its LPIPS threshold keeps its delta as it is
        scale = hyper["lr"] * (parts["lpips"] > hyper["threshold"]).astype(jnp.float32)
        updates = jax.tree_util.tree_map(lambda u: u * scale.reshape((-1,) + (1,) * (u.ndim - 1)), updates)
        return optax.apply_updates(deltas, updates), opt_state, parts

    return optimizer, step_fn


_PROGRAMS: dict = {}


def _programs(use_locality: bool, space, noise_mode, dtype, lpips_resolution, grey_loss: bool):
    key = (use_locality, space, noise_mode, dtype, lpips_resolution, grey_loss)
    if key not in _PROGRAMS:  # jax caches each program's compilations by shapes (batch, rank, generator)
        optimizer, step_fn = make_step(use_locality=use_locality, space=space, noise_mode=noise_mode, dtype=dtype,
                                       lpips_resolution=lpips_resolution, grey_loss=grey_loss)
        seen = (lambda x, target: luminance_where_grey(x, target)) if grey_loss else (lambda x, target: x)
        render = lambda base, deltas, codes, noise: jax.vmap(
            lambda d, c, z: apply_delta(with_noise(base, z), d).synthesize(c, space, noise_mode=noise_mode, dtype=dtype))(
            deltas, codes, noise)
        _PROGRAMS[key] = dict(
            init=jax.jit(optimizer.init),
            step=jax.jit(step_fn, donate_argnums=(0, 1)), step_fn=step_fn,
            render=jax.jit(render), render_fn=render,
            composite=jax.jit(composite),
            distance=jax.jit(lambda lp, x, target, target_features: lp.distance_from_features(
                lp.features(resize_for_lpips(seen(x, target), lpips_resolution)), target_features)),
            features=jax.jit(lambda lp, x: lp.features(resize_for_lpips(x, lpips_resolution))))
    return _PROGRAMS[key]


_SHARDED: dict = {}
ROWS, SAME = P(sharding.DATA_AXIS), P()


def _on_mesh(progs, name, mesh, in_specs, out_specs, donate=()):
    """progs[name + '_fn'] run per device on its own rows (shard_map; ROWS: split over the data axis,
    SAME: replicated). Per-image weights make vmapped convolutions grouped ones, which XLA's automatic
    partitioning cannot split over devices; each device running its own rows is exact, since images
    never interact (the loss is a sum over images, Adam elementwise)."""
    flat = lambda tree: repr(jax.tree_util.tree_flatten(tree, is_leaf=lambda x: isinstance(x, P)))
    key = (id(progs), name, mesh, flat(in_specs), flat(out_specs))
    if key not in _SHARDED:
        fn = shard_map(progs[name + "_fn"], mesh=mesh, in_specs=in_specs, out_specs=out_specs)
        _SHARDED[key] = jax.jit(fn, donate_argnums=donate)
    return _SHARDED[key]


# ---------------------------------------------------------------------------------------- the driver
@dataclasses.dataclass
class TuningRun:
    """What one tuning loop runs on: the step and render programs (on a mesh, one per device's rows),
    the networks, the batch, the deltas and Adam's state of B images (padded to whole rows per device)."""
    step: object
    render: object
    progs: dict
    nets: tuple
    batch: dict
    deltas: dict
    opt_state: object
    hyper: dict
    count: int  # the real images; the rest is padding
    place: object  # host arrays -> the program's arrays (sharded on a mesh)
    to_host: object  # the program's arrays -> host arrays, this process's rows


def prepare(results, generator, settings: TuningSettings, *, lpips=None, image_seeds=None, mesh=None) -> TuningRun:
    """The programs and starting state of tune_results (see there); `settings` validated."""
    if not results:
        raise ConfigError("no results to tune")
    first = results[0].settings
    keys = ("space", "noise_mode", "dtype", "lpips_net", "lpips_resolution", "grey_loss")
    if any(tuple(r.settings.get(k) for k in keys) != tuple(first.get(k) for k in keys) for r in results):
        raise ConfigError("results tuned together must share space, noise mode, dtype, LPIPS settings and grey_loss")
    if len({"noise" in r.latents for r in results}) > 1:
        raise ConfigError("results tuned together must all have optimised noise, or none")
    if any(r.tuning is not None for r in results):
        raise ConfigError("a result is already tuned; tune the untuned result again instead")
    space, noise_mode, dtype = first["space"], first.get("noise_mode", "const"), first.get("dtype", "float32")
    lpips_resolution = first.get("lpips_resolution", 256)
    count = len(results)
    lpips = lpips or load_lpips(first.get("lpips_net", "vgg"), compute_dtype=dtype)
    # grey_loss: absent from results made before it existed, which compared colours
    progs = _programs(settings.locality_weight > 0, space, noise_mode, dtype, lpips_resolution,
                      bool(first.get("grey_loss", False)))
    pad = 0 if mesh is None else -count % len(mesh.local_devices)
    rows = list(results) + [results[-1]] * pad
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x, np.float32) for x in a]), *xs)
    seeds = [settings.seed] * count if image_seeds is None else list(image_seeds)
    per_image = {"target": stack([r.target for r in rows]), "codes": stack([r.latents["codes"] for r in rows]),
                 "masks": stack([r.masks for r in rows]),
                 "image_keys": np.stack([np.asarray(jax.random.PRNGKey(int(s))) for s in seeds + seeds[-1:] * pad])}
    if "noise" in results[0].latents:  # each image renders with its own noise, as its inversion did
        per_image["noise"] = stack([r.latents["noise"] for r in rows])
    statics = [r.static_mask for r in rows]
    if any(s is not None for s in statics):
        zeros = np.zeros(per_image["target"].shape[1:3], np.float32)
        per_image["static_mask"] = stack([zeros if s is None else s for s in statics])
    pool, spread = locality_pool(generator, space, seed=settings.seed)
    one = init_delta(generator, settings.rank, settings.seed)
    deltas = jax.tree_util.tree_map(lambda x: np.broadcast_to(x, (len(rows),) + x.shape).copy(), one)
    shared = {"pool": pool, "spread": np.float32(spread)}
    nets = (generator, lpips)
    if mesh is None:
        place, to_host = (lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)), \
            (lambda tree: jax.tree_util.tree_map(np.asarray, tree))
        shared, batch_nets = place(shared), nets
    else:
        place, to_host = (lambda tree: sharding.shard_batch(tree, mesh)), sharding.local_rows
        shared, batch_nets = sharding.replicate(shared, mesh), sharding.replicate(nets, mesh)
    batch = {**place(per_image), **shared}
    batch["target_features"] = progs["features"](batch_nets[1], batch["target"])
    deltas = place(deltas)
    opt_state = progs["init"](deltas)
    run_step, render = progs["step"], progs["render"]
    if mesh is not None:
        opt_specs = jax.tree_util.tree_map(lambda x: ROWS if np.ndim(x) else SAME, opt_state)
        batch_specs = {k: SAME if k in shared else ROWS for k in batch}
        run_step = _on_mesh(progs, "step", mesh, (ROWS, opt_specs, SAME, batch_specs, SAME, SAME),
                            (ROWS, opt_specs, ROWS), donate=(0, 1))
        render = _on_mesh(progs, "render", mesh, (SAME, ROWS, ROWS, None if "noise" not in batch else ROWS), ROWS)
    return TuningRun(step=run_step, render=render, progs=progs, nets=batch_nets, batch=batch, deltas=deltas,
                     opt_state=opt_state, hyper=hyperparameters(settings), count=count, place=place,
                     to_host=to_host)


def tune_results(results, generator, settings: TuningSettings, *, lpips=None, progress=False,
                 callback=None, image_seeds=None, mesh=None) -> list:
    """Tune the generator for each of `results` (InversionResults of this generator), B at once in one
    program; returns new results: the composite and segment images rendered with the tuned weights,
    final_losses["lpips"] after tuning, and `tuning` = {"delta": ..., "record": ...}.

    The inversion's settings (space, noise, dtype, LPIPS net and resolution) are taken from the results,
    which must agree. image_seeds: each image's locality seed (default: settings.seed for every image, so
    an image tunes the same in any batch). callback(step, steps, lpips [B]) after every step. mesh
    (sharding.data_mesh()): the images and their deltas are split over its devices, the networks
    replicated; the batch is padded to whole rows per device with copies of the last image."""
    settings = settings.validate()
    t0 = time.perf_counter()
    run = prepare(results, generator, settings, lpips=lpips, image_seeds=image_seeds, mesh=mesh)
    batch, batch_nets, deltas, opt_state, hyper = run.batch, run.nets, run.deltas, run.opt_state, run.hyper
    count, place, to_host, progs = run.count, run.place, run.to_host, run.progs
    bar = Progress(settings.steps, unit="tuning steps") if progress else None
    before = None
    first_call = steady = 0.0
    done = 0
    run_step, render = run.step, run.render
    for step in range(settings.steps):
        t = time.perf_counter()
        deltas, opt_state, parts = run_step(deltas, opt_state, batch_nets, batch, np.int32(step), hyper)
        lp = to_host(parts["lpips"])[:count]  # synchronises
        dt = time.perf_counter() - t
        first_call, steady = (dt, steady) if step == 0 else (first_call, steady + dt)
        done = step + 1
        if before is None:
            before = lp.copy()
        if callback is not None:
            callback(done, settings.steps, lp)
        if bar is not None:
            bar.update(done, f"lpips {float(np.mean(lp)):.4f}")
        if settings.lpips_threshold is not None and np.all(lp <= settings.lpips_threshold):
            break
    step_ms = 1000.0 * steady / (done - 1) if done > 1 else None
    compile_seconds = max(first_call - (step_ms or 0.0) / 1000.0, 0.0)
    # The result is what a reload gives: the delta rounded to its storage dtype, rendered from that.
    deltas = cast_delta(to_host(deltas), settings.store)
    imgs = render(batch_nets[0], place(deltas), batch["codes"], batch.get("noise"))
    out = progs["composite"](imgs, batch["masks"], batch["target"], batch.get("static_mask"))
    after = to_host(progs["distance"](batch_nets[1], out, batch["target"], batch["target_features"]))[:count]
    imgs, out = to_host(imgs)[:count], to_host(out)[:count]
    if not np.all(np.isfinite(out)):
        raise ConfigError("the tuning diverged (non-finite image); lower the tuning lr")
    base_fp = fingerprint(generator)
    seconds = time.perf_counter() - t0
    tuned = []
    for i, r in enumerate(results):
        delta = jax.tree_util.tree_map(lambda x: np.asarray(x[i]), deltas)
        record = {"settings": settings.to_dict(), "rank": int(settings.rank), "dtype": settings.store,
                  "base_fingerprint": base_fp, "steps_run": done, "lpips_before": float(before[i]),
                  "lpips_after": float(after[i]), "delta_bytes": delta_bytes(delta, settings.store),
                  "params_bytes": params_bytes(generator), "seconds": seconds, "batch": count,
                  "compile_seconds": compile_seconds, "step_ms": step_ms}
        tuned.append(dataclasses.replace(
            r, composite=out[i], segment_images=imgs[i],
            final_losses={**r.final_losses, "lpips": float(after[i])},
            tuning={"delta": delta, "record": record}))
    return tuned
