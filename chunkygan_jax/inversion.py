"""The drivers of the inversion (core.py holds the objective and the pure step):

    core.py   inversion_core(generator, settings) -> Core: batch / init / step / evaluate (pure, jittable)
                 |
    here      Inverter: the step in one of three loop forms, jitted once per setup, state donated, the
                 |        loss history kept on the host; meshes (sharding.py) shard the batch axis
              invert_batch(images) / invert(image): images in, InversionResults out (snapshots, progress,
                          timings, tuning); dataset.py, editing/region.py and the editor drive Inverter too

On GPUs and TPUs a jitted loop runs many steps per call and the host returns only at progress and
snapshot points; on CPUs, where XLA runs a loop body about 3x slower than the same step as a plain
program, the host calls one jitted step at a time (`default_loop_form`). Either way the loop state is
donated and the generator's weight-only preprocessing is done once per Inverter.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import io, sharding
from .align import Alignment, align_image, find_alignments, load_photo, photo_mode
from .align import align as align_photo
from .core import (MASK_ADAM_EPS, NOISE_MODES, SPACE_ALIASES, Core, CoreState, InversionSettings,  # noqa: F401
                   as_settings, dispersion, image_seeds, inversion_core, make_loss_fn, nvidia_lr_schedule, w_std_of)
from .demo import resolve_generator
from .errors import ConfigError, ImageError, ResourceError
from .generators.protocol import bind_label
from .groups import FaceGroup
from .lpips import load_lpips
from .masks.composite import composite
from .masks.options import MaskSettings, as_mask_settings, make_mask_source, mask_source_record  # noqa: F401
from .progress import Progress
from .results import InversionResult, Snapshot, generator_record
from .tuning import as_tuning, tune_results

LOOP_FORMS = ("loop", "steps", "unrolled")
UNROLL = 4  # steps per call in the "unrolled" form


def default_loop_form(backend: str) -> str:
    """XLA:CPU runs a while-loop body about 3x slower than the same computation as a plain program
    (docs/performance.md), so on CPUs the host drives one jitted step at a time; GPUs and TPUs run
    many steps per call in a jitted loop."""
    return "steps" if backend == "cpu" else "loop"


@functools.lru_cache(maxsize=16)
def _programs(settings: InversionSettings, mesh):
    """The jitted drivers of `Core.step` for one setup, shared by every Inverter with equal settings and
    mesh (jax then caches one executable per architecture and shape). The core is an argument, never a
    constant of the program. The loop state (core state, history) is donated: each call's outputs reuse
    its inputs' buffers."""
    constrain = (lambda tree, b: tree) if mesh is None else \
        (lambda tree, b: sharding.constrain_batch(tree, mesh, b))

    def run(core, state, history, batch, count):  # the "loop" form: count steps in a fori_loop
        def body(_, carry):
            state, history = carry
            new, parts = core.step(state, batch)
            history = jax.lax.dynamic_update_slice(history, parts["total"][:, None], (0, state.step))
            return new, history

        carry = jax.lax.fori_loop(0, count, body, (state, history))
        return constrain(carry, history.shape[0])

    def steps(core, state, batch, count):  # count is static: the steps are unrolled
        totals = []
        for _ in range(count):
            state, parts = core.step(state, batch)
            totals.append(parts["total"])
        return constrain((state, jnp.stack(totals, axis=1)), _batch_of(state.latents))

    def snapshot(core, latents, batch, progress):  # what a progression sheet shows, and nothing more
        imgs, seg_masks = core.render(latents, progress)
        return composite(imgs, seg_masks, batch["target"], batch.get("static_mask")), seg_masks

    def start(core, latents):  # a copy of the latents too: the caller's arrays are never donated
        copy = jax.tree_util.tree_map(lambda x: x + jnp.zeros((), x.dtype), latents)
        return constrain(core.start(copy), _batch_of(latents))

    return dict(start=jax.jit(start), evaluate=jax.jit(lambda core, *a: core.evaluate(*a)),
                snapshot=jax.jit(snapshot), run=jax.jit(run, donate_argnums=(1, 2)),
                steps=jax.jit(steps, static_argnums=(3,), donate_argnums=(1,)),
                batch=jax.jit(lambda core, targets: core.batch(targets)))


def _batch_of(tree) -> int:
    return jax.tree_util.tree_leaves(tree)[0].shape[0]


# ---------------------------------------------------------------------------------------- memory
_LINEAR = ("conv_general_dilated", "dot_general")


def _linear_output_bytes(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _LINEAR:
            total += sum(int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize for v in eqn.outvars)
        for param in eqn.params.values():  # jaxprs nested in jit, remat, custom_vjp ...
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    total += _linear_output_bytes(sub)
    return total


_SEGMENT_BYTES: dict = {}  # (generator type, config, space, noise, dtype) -> bytes; configs are frozen


def step_memory_bytes(generator, settings: InversionSettings, images: int) -> int:
    """An estimate, meant as a lower bound, of one step's memory for `images` photos on one device: the
    outputs of the generator's linear layers (convolutions, matrix products) for every segment, which the
    backward pass must keep or recompute. Found by tracing the synthesis for one and for two segments
    (the difference leaves out what does not grow with the segments). XLA's plans on CPU take 2.5 to 3.5
    times this per segment (bench/memory_estimate.py)."""
    key = (type(generator), generator.config, settings.space, settings.noise_mode, settings.dtype)
    if key not in _SEGMENT_BYTES:
        def traced(k):
            synth = lambda g, c: g.synthesize(c, settings.space, noise_mode=settings.noise_mode,
                                              dtype=settings.dtype)
            return _linear_output_bytes(jax.make_jaxpr(synth)(generator, generator.initial_codes(settings.space,
                                                                                                 k)).jaxpr)

        _SEGMENT_BYTES[key] = traced(2) - traced(1)
    return images * settings.segments * _SEGMENT_BYTES[key]


def available_memory(device=None) -> tuple[int | None, str]:
    """(bytes, where) one step may use: the accelerator's memory limit, or the host's available memory
    for CPU devices; (None, ...) when unknown."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    return None, "unknown"


def check_memory(generator, settings: InversionSettings, images_per_device: int) -> None:
    """Refuse up front (ResourceError) a step whose memory lower bound exceeds what a device has."""
    have, where = available_memory()
    if have is None:
        return
    need = step_memory_bytes(generator, settings, images_per_device)
    if need > have:
        gib = lambda b: f"{b / 2**30:.1f} GiB"
        raise ResourceError(
            f"{images_per_device} image(s) x {settings.segments} segments at {generator.resolution} px need "
            f"at least {gib(need)} per step (the generator's activations for every segment), more than "
            f"the {gib(have)} of {where}; use fewer segments or fewer images per device")


_image_seeds = jax.jit(image_seeds)


# ---------------------------------------------------------------------------------------- the loop
@dataclasses.dataclass
class InversionState:
    core: CoreState  # on the device(s); donated by the next advance()
    step: int  # steps done, known on the host
    history: np.ndarray  # [B, steps] total loss per step

    @property
    def latents(self):
        return self.core.latents

    @property
    def opt_state(self):
        return self.core.opt_state


class Inverter:
    """A driver of the pure core (core.py) for one generator and one setup. The compiled programs are
    shared by all Inverters with equal settings, so neither a new image nor a new Inverter (invert()
    builds one per call) recompiles; only a new architecture, image size, batch size or setting does."""

    def __init__(self, generator, settings: InversionSettings, mask_source=None, *, static_mask=False,
                 mesh=None, lpips=None, loop: str | None = None):
        # mesh: a jax.sharding.Mesh (sharding.data_mesh()): the batch axis is split over its data axis
        # and the networks are replicated; host-side arrays (targets in, history and evaluate() out) are
        # then this process's rows. None: one device.
        # lpips: an LPIPS object to use instead of the pretrained one (e.g. random weights in benchmarks).
        # loop: how advance() runs its steps: "loop" (many steps per call in a jitted fori_loop), "steps"
        # (one jitted step per call, driven by the host) or "unrolled" (UNROLL steps per call); None
        # picks by backend (default_loop_form).
        self.mesh = mesh
        rep = (lambda tree: sharding.replicate(tree, mesh)) if mesh is not None else (lambda tree: tree)
        self.generator = rep(generator)
        self.settings = settings.validate(generator)
        s = self.settings
        self.mask_source = rep(mask_source if mask_source is not None else make_mask_source(
            None, s.segments, generator.resolution, seed=s.seed, generator=generator))
        self.lpips = rep(lpips if lpips is not None else load_lpips(s.lpips_net, compute_dtype=s.dtype))
        self.core = inversion_core(self.generator, s, self.mask_source, lpips=self.lpips)
        self._has_static = static_mask
        self._programs = _programs(self.core.settings, mesh)  # the core's settings: the seed left out
        backend = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
        self.loop = loop or default_loop_form(backend)
        if self.loop not in LOOP_FORMS:
            raise ConfigError(f"loop must be one of {LOOP_FORMS}, got {loop!r}")
        self._run = self._programs["run" if self.loop == "loop" else "steps"]  # the program advance() runs

    def _to_device(self, tree):
        if self.mesh is None:
            return jax.tree_util.tree_map(jnp.asarray, tree)
        return sharding.shard_batch(tree, self.mesh)

    def _to_host(self, tree):
        if self.mesh is None:
            return jax.tree_util.tree_map(np.asarray, tree)
        return sharding.local_rows(tree)

    # ------------------------------------------------------------------ setup
    def initial_latents(self, batch_size: int, initial_codes=None, targets=None):
        """The core's starting latents; `targets` (this process's rows, on the host) seed each image's
        start (core.image_seeds), as Core.init does: without them every segment starts equal."""
        seeds = None if targets is None else _image_seeds(np.asarray(targets, np.float32))
        latents = self.core.initial_latents(batch_size, initial_codes, seeds)
        return latents if self.mesh is None else self._to_device(self._to_host(latents))

    def make_batch(self, targets, static_masks=None) -> dict:
        targets = jnp.asarray(targets, jnp.float32) if self.mesh is None else \
            self._to_device(np.asarray(targets, np.float32))
        if bool(static_masks is not None) != self._has_static:
            raise ConfigError("this Inverter was built " + ("with" if self._has_static else "without")
                              + " a static mask; build another for the other case")
        batch = self._programs["batch"](self.core, targets)
        if self.mesh is not None:  # the scalar as a host value: the programs place it on the mesh
            batch["w_std"] = np.float32(self.core.w_std)
        if static_masks is not None:
            batch["static_mask"] = self._to_device(np.asarray(static_masks, np.float32))
        return batch

    def start(self, latents, batch_size: int) -> InversionState:
        return InversionState(core=self._programs["start"](self.core, latents), step=0,
                              history=np.zeros((batch_size, self.settings.steps), np.float32))

    def advance(self, state: InversionState, batch, count: int) -> InversionState:
        """Run `count` more steps. The state's device buffers are donated: use the returned state."""
        count = int(min(count, self.settings.steps - state.step))
        if count <= 0:
            return state
        if self.loop == "loop":
            scalar = jnp.int32 if self.mesh is None else np.int32
            core, history = self._run(self.core, state.core, self._to_device(state.history), batch, scalar(count))
            return InversionState(core, state.step + count, self._to_host(history))
        chunk = UNROLL if self.loop == "unrolled" else 1
        core, totals, done = state.core, [], 0
        while done < count:
            k = chunk if count - done >= chunk else 1  # the remainder one step at a time: two programs
            core, total = self._run(self.core, core, batch, k)
            totals.append(total)
            done += k
        history = state.history.copy()
        history[:, state.step:state.step + count] = np.concatenate(self._to_host(totals), axis=1)
        return InversionState(core, state.step + count, history)

    def evaluate(self, latents, batch, step: int | None = None):
        """(segment images [B, n, H, W, 3], masks [B, n, H, W], composite [B, H, W, 3], loss parts), on the
        host, as after `step` steps (None: all, the masks a result keeps)."""
        return self._to_host(self._programs["evaluate"](self.core, latents, batch, self._progress(step)))

    def snapshot(self, latents, batch, step: int | None = None):
        """(composite [B, H, W, 3], masks [B, n, H, W]) on the host, as after `step` steps: the only
        arrays a snapshot copies from the device (no segment images, no losses)."""
        return self._to_host(self._programs["snapshot"](self.core, latents, batch, self._progress(step)))

    def _progress(self, step):
        done = 1.0 if step is None else min(int(step), self.settings.steps) / self.settings.steps
        return np.float32(done) if self.mesh is not None else jnp.float32(done)


# ---------------------------------------------------------------------------------------- entry points
def _unbatch(tree, i):
    return jax.tree_util.tree_map(lambda x: np.asarray(x[i]), tree)


@dataclasses.dataclass(frozen=True)
class Monitor:
    """What the drivers report while they run (nothing of it changes a result).

    callback(step, steps, losses): called after step 1, every `every` steps, at `snapshot_steps` and after
        the last; losses: each image's total loss at that step, [1] from invert() ([B] from invert_batch:
        the real images, not the padding).
    every: steps between reports (0: only after step 1 and the last; with progress, 0 picks a twentieth).
    progress: print a progress line (progress.Progress: steps done, rate, ETA, loss) on stderr.
    snapshot_steps: steps at which the composite and masks are kept (for a progression sheet).
    tune_callback(step, steps, lpips): after every pivotal-tuning step."""
    callback: Callable | None = None
    every: int = 25
    progress: bool = False
    snapshot_steps: tuple = ()
    tune_callback: Callable | None = None


def _prepare(generator, image, static_mask, reading: io.ReadOptions):
    target = reading.target(image, generator.resolution)
    sx = None
    if static_mask is not None:
        if isinstance(static_mask, (str, Path)):
            sx = io.load_mask(static_mask, generator.resolution)
        else:
            sx = np.asarray(static_mask, np.float32)
            if sx.shape != (generator.resolution,) * 2:
                raise ImageError(f"the static mask must be [{generator.resolution}, {generator.resolution}], "
                                 f"got {sx.shape}")
            if not np.all(np.isfinite(sx)) or sx.min() < 0 or sx.max() > 1:
                raise ImageError("the static mask's values must lie in [0, 1]")
    return target, sx


def invert_batch(images, generator=None, *, segments=None, steps=None, settings=None, masks=None,
                 initial_codes=None, tune=None, reading: io.ReadOptions | None = None,
                 monitor: Monitor | None = None, inverter: Inverter | None = None, mesh=None) -> list[InversionResult]:
    """Invert B images at once (one jitted step for all B x n segments). See `invert` for the options;
    here `masks.static` is a list (one static mask or None per image) and `initial_codes` has a leading
    batch axis. `mesh` (sharding.data_mesh()) shards the images over its devices; the batch is padded to
    a multiple of this process's devices with copies of the last image, whose results are dropped.
    `inverter`: a ready Inverter for these settings (its compiled programs are reused)."""
    t0 = time.perf_counter()
    settings = as_settings(settings, segments=segments, steps=steps)
    generator = bind_label(resolve_generator(generator), settings.label)  # a conditional generator's class
    label = None if generator.label is None else int(generator.label)  # a generator given bound keeps its class
    settings = settings.replace(label=label).validate(generator)
    mask_settings = as_mask_settings(masks)
    reading = reading or io.ReadOptions()
    monitor = monitor or Monitor()
    if not images:
        raise ConfigError("no images to invert")
    tune = as_tuning(tune)  # checked before any work
    static_masks = list(mask_settings.static) if mask_settings.static is not None else [None] * len(images)
    if len(static_masks) != len(images):
        raise ConfigError(f"{len(static_masks)} static masks for {len(images)} images")
    on = mesh if mesh is not None else (inverter.mesh if inverter is not None else None)
    devices = len(on.local_devices) if on is not None else 1
    check_memory(generator, settings, -(-len(images) // devices))  # before any compilation
    prepared = [_prepare(generator, im, sm, reading) for im, sm in zip(images, static_masks)]
    targets = np.stack([p[0] for p in prepared])
    has_static = any(p[1] is not None for p in prepared)
    sxs = np.stack([p[1] if p[1] is not None else np.zeros(targets.shape[1:3], np.float32)
                    for p in prepared]) if has_static else None
    inverter_given = inverter
    if inverter is None:
        source = make_mask_source(mask_settings.source, settings.segments, generator.resolution, seed=settings.seed,
                                  learn=mask_settings.learn, generator=generator, segmenter=mask_settings.segmenter)
        inverter = Inverter(generator, settings, source, static_mask=has_static, mesh=mesh)
    elif inverter.settings != settings:
        raise ConfigError("the given inverter was built for other settings")
    if mesh is not None and inverter.mesh is not mesh:
        raise ConfigError("the given inverter was built for another mesh")
    count = len(images)
    if inverter.mesh is not None:  # pad to whole rows per device; padded results are dropped below
        pad = -count % len(inverter.mesh.local_devices)
        padded = lambda x: np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
        targets = padded(targets)
        sxs = None if sxs is None else padded(sxs)
        initial_codes = None if initial_codes is None else jax.tree_util.tree_map(
            lambda x: padded(np.asarray(x)), initial_codes)

    given_source = inverter.mask_source if inverter_given is not None and mask_settings.source is None \
        else mask_settings.source
    record = mask_source_record(given_source, inverter.mask_source, generator, settings.segments,
                                segmenter=mask_settings.segmenter)
    steps = settings.steps
    bar = Progress(steps, unit="steps") if monitor.progress else None
    every = monitor.every or (max(1, min(25, steps // 20)) if monitor.progress else 0)
    batch = inverter.make_batch(targets, sxs)
    state = inverter.start(inverter.initial_latents(len(targets), initial_codes, targets), len(targets))
    # The first call runs one step alone: its time is the compilation plus one step, and the steps after it
    # give the steady time per step.
    snap_set = {int(s) for s in monitor.snapshot_steps if 0 <= int(s) <= steps}
    stops = sorted(snap_set | (set(range(every, steps, every)) if every else set()) | {1, steps})
    snapshots = [[] for _ in images]
    first_call = steady = 0.0
    for stop in stops:
        t = time.perf_counter()
        state = inverter.advance(state, batch, stop - state.step)  # returns host arrays: synchronised
        if stop == 1:
            first_call = time.perf_counter() - t
        else:
            steady += time.perf_counter() - t
        if stop in snap_set:
            out, seg_masks = inverter.snapshot(state.latents, batch, stop)
            for i in range(count):
                snapshots[i].append(Snapshot(stop, out[i], seg_masks[i]))
        if monitor.callback is not None:
            monitor.callback(state.step, steps, state.history[:count, max(state.step - 1, 0)])
        if bar is not None:
            bar.update(state.step, f"loss {float(np.mean(state.history[:count, max(state.step - 1, 0)])):.4f}")
    imgs, seg_masks, out, parts = inverter.evaluate(state.latents, batch)
    seconds = time.perf_counter() - t0
    step_ms = 1000.0 * steady / (steps - 1) if steps > 1 else None
    compile_seconds = max(first_call - (step_ms or 0.0) / 1000.0, 0.0)
    if not np.all(np.isfinite(parts["total"][:count])):
        raise ConfigError("the inversion diverged (non-finite loss); lower lr or the loss weights")
    recorded = settings.to_dict()
    if recorded["label"] is None:  # recorded only for a conditional generator
        del recorded["label"]
    results = []
    for i in range(count):
        results.append(InversionResult(
            target=targets[i], composite=out[i], segment_images=imgs[i], masks=seg_masks[i],
            latents=_unbatch(state.latents, i), loss_history=state.history[i].copy(),
            final_losses={k: float(v[i]) for k, v in parts.items()}, settings={**recorded, "masks": record,
                                                                           "generator": generator_record(generator)},
            static_mask=None if sxs is None else sxs[i], snapshots=snapshots[i], seconds=seconds,
            compile_seconds=compile_seconds, step_ms=step_ms))
        if _is_grey(targets[i]):  # compared in luminance (settings.grey_loss), shown in grey
            results[-1].settings["photo_mode"] = "grey"
    if tune is not None:  # one batched program for all images, sharded like the inversion
        results = tune_results(results, generator, tune, lpips=inverter.lpips, progress=monitor.progress,
                               callback=monitor.tune_callback, mesh=inverter.mesh)
    return results


def invert(image, generator=None, *, segments=None, steps=None, settings=None, masks=None, initial_codes=None,
           align=False, face=None, tune=None, reading: io.ReadOptions | None = None,
           monitor: Monitor | None = None) -> InversionResult | FaceGroup:
    """Reconstruct one photo as `segments` latent codes blended by soft masks (ChunkyGAN).

    image: a path or an array ([H, W, 3] uint8, or float in [-1, 1]) at the generator's resolution;
        with `align`, a photo of any size. A file of another size is resized (logged); one under a
        quarter of the resolution is refused unless reading.upscale.
    generator: a generator object, a checkpoint path (ours, NVIDIA .pkl, rosinality .pt), or None for
        the demo face generator.
    segments, steps: shorthands for the same fields of `settings`.
    settings: an `InversionSettings` (or a dict of its fields): everything that changes the result (space,
        lr, lambda_reg, the LPIPS network, seed, dtype, optimize_noise, label, ...; each default and its
        meaning is documented there). space and lambda_reg default to the generator's own.
    masks: a `MaskSettings` or, for short, its `source`: None / 'segmenter' (the paper's method and the
        default for generators that offer their features, StyleGAN2 and the demo DCGAN: S = G^S(X^S), the
        segment code X^S learned with the image codes; the k-means head cached per generator, or
        MaskSettings.segmenter), 'logits' (learned low-resolution logits from a soft Voronoi layout),
        'layout' (that layout, fixed), an array [n, H, W] or label map [H, W] (user masks, fixed unless
        MaskSettings.learn), or a mask source. MaskSettings.static: the static mask of eq. 3 ([H, W] in
        [0, 1] or a mask file; where 1, the composite is the input image). The result records the
        choice in settings["masks"].
    initial_codes: the codes to start from ([n, ...] in the space), instead of the generator's own start.
    align: True finds the face (the largest, or number `face` from the left) and inverts its FFHQ-aligned
        crop (`chunkygan_jax.align`); an `Alignment` found earlier on this photo is used as it is. The
        result then records `alignment` (its JSON form) and `photo` (the path, when `image` is one), so
        that the projection or an edit can be pasted back (`align.paste_back`).
    face: with align=True, the face to invert (None: the largest), or "all": every face found is
        aligned and all are inverted as one batch (one jitted program; with `tune`, tuned together), and
        a `groups.FaceGroup` is returned. Faces whose quad is under a quarter of the generator's
        resolution are skipped (listed in its `skipped` with the reason) unless reading.upscale.
    tune: pivotal tuning after the inversion (tuning.py): a number of steps or a `TuningSettings`; None or
        0: off. The result then renders with its own small change of the generator's drawing weights
        (`result.tuning`; `deltas.tuned_generator(generator, result.tuning)` gives the tuned generator,
        and every edit applies it).
    reading: an `io.ReadOptions` (crop, alpha, upscale) for image files.
    monitor: a `Monitor` (callback, progress line, snapshots, tuning callback).
    A greyscale photo (equal channels) is compared with the composite's luminance (settings.grey_loss)
    and records settings["photo_mode"] = "grey": what is shown of the result (projection.png, pasted
    photos, edits) is then its luminance (`align.as_mode`). A conditional generator's class
    (settings.label) is recorded in settings["label"].
    The result records the generator that made it in settings["generator"] (`results.generator_record`:
    "demo", the checkpoint's path, or None for a generator made in memory).
    The result's `compile_seconds` (the step program's compilation: the first step call beyond a steady
    step) and `step_ms` (the steady time per step) are measured apart; `seconds` is the whole call,
    one-off work such as loading LPIPS and the snapshots included.
    """
    mask_settings = as_mask_settings(masks)
    options = dict(segments=segments, steps=steps, settings=settings, tune=tune, reading=reading, monitor=monitor)
    if isinstance(face, str):
        if face != "all":
            raise ConfigError(f"face must be a face number, None (the largest) or 'all', got {face!r}")
        if align is not True:
            raise ConfigError("face='all' finds every face; pass align=True")
        if mask_settings.static is not None:
            raise ConfigError("a static mask is one image's; it does not apply to face='all'")
        return _invert_faces(image, resolve_generator(generator), mask_settings, initial_codes, options)
    alignment = None
    if align is not False and align is not None:
        generator = resolve_generator(generator)
        image, alignment = _aligned(image, generator.resolution, align, face)
    elif face is not None:
        raise ConfigError("face= chooses the face to align; pass align=True too")
    init = None if initial_codes is None else jax.tree_util.tree_map(lambda x: np.asarray(x)[None], initial_codes)
    one = dataclasses.replace(mask_settings, static=[mask_settings.static])
    result = invert_batch([image], generator, masks=one, initial_codes=init, **options)[0]
    if alignment is not None:
        result.alignment, result.photo = alignment
    return result


def _is_grey(target) -> bool:
    t = np.asarray(target)
    return bool(np.array_equal(t[..., 0], t[..., 1]) and np.array_equal(t[..., 0], t[..., 2]))


def _invert_faces(photo, generator, mask_settings, initial_codes, options) -> FaceGroup:
    """invert(face="all"): every face aligned, too small ones skipped, the rest inverted as one batch."""
    rgb = load_photo(photo)
    found, skipped = find_alignments(rgb)
    res, upscale = generator.resolution, (options["reading"] or io.ReadOptions()).upscale
    images, kept = [], []
    for al in found:
        if al.side < res / 4 and not upscale:
            skipped.append({"face": al.face, "quad": al.to_json()["quad"],
                            "reason": f"the face is {al.side:.0f} px wide, under a quarter of the generator's "
                                      f"{res} px (upscale=True, or --upscale, inverts it anyway)"})
            continue
        images.append(align_image(rgb, al, res, output="float"))
        kept.append(al)
    skipped.sort(key=lambda d: d["face"])
    name = str(photo) if isinstance(photo, (str, os.PathLike)) else "the image"
    if not kept:
        why = "; ".join(f"face {d['face']}: {d['reason']}" for d in skipped)
        raise ImageError(f"{name}: no face to invert among the {len(skipped)} found ({why})")
    init = None if initial_codes is None else jax.tree_util.tree_map(
        lambda x: np.repeat(np.asarray(x)[None], len(images), axis=0), initial_codes)
    results = invert_batch(images, generator, masks=mask_settings, initial_codes=init, **options)
    path = str(Path(photo).resolve()) if isinstance(photo, (str, os.PathLike)) else None
    mode = photo_mode(rgb)
    for r, al in zip(results, kept):
        r.alignment, r.photo = al.to_json(), path
        if mode == "grey":
            r.settings["photo_mode"] = "grey"
    return FaceGroup(results=results, skipped=skipped, photo=path, photo_size=(rgb.shape[1], rgb.shape[0]),
                     mode=mode, faces_found=kept[0].faces_found)


def _aligned(photo, resolution, align, face):
    """(the FFHQ-aligned crop of `photo`, float [R, R, 3]; (Alignment JSON, the photo's path or None))."""
    if isinstance(align, Alignment):
        if face is not None:
            raise ConfigError("face= chooses a face to find; a ready Alignment was given")
        rgb = load_photo(photo)
        if tuple(align.photo_size) != (rgb.shape[1], rgb.shape[0]):
            raise ImageError(f"the alignment was computed on a {align.photo_size[0]}x{align.photo_size[1]} "
                             f"photo, this one is {rgb.shape[1]}x{rgb.shape[0]}")
        image, found = align_image(rgb, align, resolution, output="float"), align
    elif align is True:
        image, found = align_photo(photo, resolution, face=face, output="float")
    else:
        raise ConfigError(f"align must be True, False or an Alignment, got {align!r}")
    path = str(Path(photo).resolve()) if isinstance(photo, (str, os.PathLike)) else None
    return image, (found.to_json(), path)
