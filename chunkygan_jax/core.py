"""The inversion as pure functions (the objective, paper eq. 2 and 3, and one optimiser step):

    core = inversion_core(generator, settings)          # a pytree: networks as leaves, settings static
    batch = core.batch(targets)                         # targets [B, H, W, 3] in [-1, 1], their LPIPS features
    state = core.init(targets)                          # CoreState: latents, Adam state, step, lr
    state, metrics = core.step(state, batch)            # one step; metrics: per-image loss parts [B]

`init` and `step` are pure: they can be jitted (pass `core` as an argument, so that the weights are not
baked into the program), run under `lax.scan`, vmapped (over images, or over `state.lr`), and run under
a user's mesh (shard the leading batch axis of the state and batch; replicate `core`). The drivers in
inversion.py (`Inverter`, `invert`, `invert_batch`) and everything built on them run this step.

    O = S^X * I + (1 - S^X) * sum_i G(X_i) * S_i                         (composite; S^X = 0 by default)
    L = LPIPS(I, O) + l2_weight * mean((O - I)^2)
        + lambda_reg * sum_i ||X_i - mean_j X_j||^2                     (paper's dispersion term)
        + mean_latent_weight * mean(((w - w_avg) / w_std)^2)            (the authors' tool's term)
        + noise_reg_weight * NVIDIA's noise regulariser                 (with optimize_noise; noise.py)

The B*n codes go through the generator as ONE batch, masks blend them, LPIPS compares with target
features computed once. The loss is a sum over images and Adam is elementwise, so images in a batch
never influence each other.

Units of lambda_reg: squared distances in the latent space's own units, summed over segments, layers and
dimensions (the paper's unnormalised sum). The paper's value 1 was tuned for FFHQ's W space; for other
generators (small random ones, the demo DCGAN's z space) much smaller values, or 0, fit far better.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .compute import COMPUTE_DTYPES
from .errors import ConfigError
from .generators.stylegan2 import sample_ws
from .lpips import load_lpips, resize_for_lpips
from .masks.composite import composite, luminance_where_grey
from .masks.options import make_mask_source
from .masks.sources import source_masks
from .noise import DEFAULT_NOISE_REG_WEIGHT, initial_noise, mask_params, normalize, regularizer, require_noise

SPACE_ALIASES = {"wplus": "w+", "w_plus": "w+", "W": "w", "W+": "w+", "S": "s"}
NOISE_MODES = ("const", "none")  # an inversion's images must be a function of its codes alone


# ---------------------------------------------------------------------------------------- schedule
def nvidia_lr_schedule(lr: float, steps: int, rampup: float = 0.05, rampdown: float = 0.25):
    """NVIDIA's projector schedule: linear ramp-up over the first 5 %, cosine ramp-down over the last
    25 %, lr = 0 at step 0. t is clamped to [0, 1], so steps past the end keep lr = 0 (the authors' tool
    let it rise again)."""
    return lambda count: lr * _ramp(count, steps, rampup, rampdown)


def _ramp(count, steps, rampup=0.05, rampdown=0.25):
    t = jnp.clip(count / max(steps, 1), 0.0, 1.0)
    ramp = jnp.minimum(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * jnp.cos(jnp.pi * ramp)
    return ramp * jnp.minimum(1.0, t / rampup)


# ---------------------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class InversionSettings:
    """Everything that changes an inversion's result, each default written here once. The one object that
    flows through the drivers (invert, invert_batch, the dataset runner, local edits, the editor);
    `validate(generator)` resolves the generator-dependent defaults (None) and checks every field."""
    segments: int = 8
    space: str | None = None  # None: the generator's default_space (StyleGAN2: "w+"; the demo DCGAN: "z")
    steps: int = 500
    lr: float = 0.1
    # The paper's dispersion weight (units: the module docstring). None: the generator's calibrated
    # default_lambda_reg (StyleGAN2: 1.0, the paper's; the demo DCGAN: 0).
    lambda_reg: float | None = None
    l2_weight: float = 0.0
    mean_latent_weight: float = 0.0
    lpips_net: str = "vgg"
    lpips_resolution: Any = 256
    seed: int = 0
    noise_mode: str = "const"
    dtype: str = "float32"
    remat: bool = False  # recompute synthesis blocks in the backward pass (memory at 1024 px)
    optimize_noise: bool = False  # the generator's noise buffers are optimised too (noise.py)
    noise_reg_weight: float = DEFAULT_NOISE_REG_WEIGHT
    # One noise per image, shared by its segments (what results store and render); True gives each segment
    # its own, for the measurement in docs/inversion.md (bench/noise_sharing.py) only.
    noise_per_segment: bool = False
    # A greyscale target (three equal channels) is compared with the composite's luminance, not its
    # colours: the generator is free to pick any colour of the right brightness. False: always colour.
    grey_loss: bool = True
    # With learned masks and n > 1: the std of a per-segment offset added to the starting codes, so that
    # the segments differ and the masks get a real gradient from the first step (equal codes give them
    # exactly none, and Adam follows rounding). Seeded per image by its pixels and `seed` (`image_seeds`):
    # the same start whatever the batch or devices. Off by default (0: every segment starts equal): on
    # the three real photos it fitted no better, and it does not make a result independent of the batch
    # and the devices (docs/distributed.md, "Numerics").
    start_jitter: float = 0.0
    label: int | None = None  # the class of a conditional generator (protocol.bind_label), else None

    def validate(self, generator) -> "InversionSettings":
        """These settings for `generator`: its defaults filled in (space, lambda_reg), every field checked."""
        space = SPACE_ALIASES.get(self.space, self.space) if self.space is not None else generator.default_space
        lambda_reg = generator.default_lambda_reg if self.lambda_reg is None else self.lambda_reg
        self = dataclasses.replace(self, lambda_reg=lambda_reg)
        generator.check_space(space)  # the generator's own, more specific message
        if space not in generator.latent_spaces:
            raise ConfigError(f"unknown latent space {self.space!r}; this generator supports "
                              f"{', '.join(generator.latent_spaces)}")
        if not isinstance(self.segments, (int, np.integer)) or self.segments < 1:
            raise ConfigError(f"segments must be an integer >= 1, got {self.segments!r}")
        if not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {self.steps!r}")
        for name in ("lr", "lambda_reg", "l2_weight", "mean_latent_weight", "noise_reg_weight", "start_jitter"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(map(repr, COMPUTE_DTYPES))}, got {self.dtype!r}")
        if self.noise_mode not in NOISE_MODES:
            # 'random' would draw new noise at every render: the saved codes would not reproduce the
            # projection, and every later edit would move pixels the edit never asked to move.
            raise ConfigError(f"noise_mode must be one of {', '.join(NOISE_MODES)} for an inversion (fixed "
                              f"noise, so that the codes reproduce their image), got {self.noise_mode!r}")
        for name in ("optimize_noise", "grey_loss"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.optimize_noise:
            require_noise(generator)
            if self.noise_mode != "const":
                raise ConfigError(f"optimize_noise optimises the constant noise buffers: noise_mode must be "
                                  f"'const', got {self.noise_mode!r}")
        if self.mean_latent_weight > 0 and "w" not in generator.latent_spaces:
            raise ConfigError("mean_latent_weight needs a StyleGAN generator (W space)")
        if self.mean_latent_weight > 0 and space == "s":
            raise ConfigError("mean_latent_weight applies to the w and w+ spaces only")
        if self.label is not None and (isinstance(self.label, bool) or not isinstance(self.label, (int, np.integer))):
            raise ConfigError(f"label must be a class number or None, got {self.label!r}")
        return dataclasses.replace(self, space=space)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "InversionSettings":
        """A copy with `changes`; None values leave a field as it is (the keyword shorthands of the drivers)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown inversion setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def as_settings(settings=None, **shorthands) -> InversionSettings:
    """`settings` (an InversionSettings, a dict of its fields, or None: the defaults) with the drivers'
    keyword shorthands (segments=, steps=) applied where given."""
    if settings is None:
        settings = InversionSettings()
    elif isinstance(settings, dict):
        settings = InversionSettings().replace(**settings)
    elif not isinstance(settings, InversionSettings):
        raise ConfigError(f"settings must be an InversionSettings or a dict of its fields, got {type(settings).__name__}")
    return settings.replace(**shorthands)


# ---------------------------------------------------------------------------------------- objective
def dispersion(codes) -> jax.Array:
    """sum_i ||X_i - mean_j X_j||^2 for codes with the segment axis first (any pytree)."""
    leaves = jax.tree_util.tree_leaves(codes)
    return sum(jnp.sum(jnp.square(x - jnp.mean(x, axis=0, keepdims=True))) for x in leaves)


def _mean_latent_term(generator, codes, space, w_std):
    ws = generator.to_ws(codes, space)
    z = (ws - generator.w_avg) / w_std
    term = jnp.mean(jnp.square(z))
    return term / generator.num_ws if space == "w+" else term


def w_std_of(generator, num_samples=10_000, seed=123) -> float:
    """The scalar spread of W used by NVIDIA's projector: sqrt(E ||w - w_avg||^2)."""
    w = sample_ws(generator, num_samples, seed)[:, 0].astype(np.float64)
    return float(np.sqrt(np.sum(np.square(w - w.mean(axis=0))) / num_samples))


def make_loss_fn(settings: InversionSettings):
    """loss(nets, latents, batch) -> (sum over images, per-image dict) and render(nets, latents).

    nets = (generator, lpips, mask_source) are pytrees passed as ARGUMENTS (not closed over), so one
    compiled program serves every checkpoint of the same architecture and parameters are never baked
    into the program as constants. `latents` = {"codes": [B, n, ...], + the mask source's params with a
    leading B}; `batch` = target, target features, static mask, w_std."""
    dtype = settings.dtype  # a name of compute.COMPUTE_DTYPES, resolved by the generator
    space = settings.space

    def render(nets, latents, progress):
        generator, _, mask_source = nets
        codes = latents["codes"]
        b, n = jax.tree_util.tree_leaves(codes)[0].shape[:2]
        flat = jax.tree_util.tree_map(lambda x: x.reshape((b * n,) + x.shape[2:]), codes)
        extra = {"remat": True} if settings.remat else {}
        if "noise" in latents:  # [B, 1 or n, res, res] per layer -> one buffer per segment image
            extra["noise"] = {k: jnp.broadcast_to(v, (b, n) + v.shape[2:]).reshape((b * n,) + v.shape[2:])
                              for k, v in latents["noise"].items()}
        imgs = generator.synthesize(flat, space, noise_mode=settings.noise_mode, dtype=dtype, **extra)
        imgs = imgs.reshape((b, n) + imgs.shape[1:])
        params = mask_params(latents)
        if params:
            seg_masks = jax.vmap(lambda p: source_masks(mask_source, p, progress))(params)
        else:
            fixed = source_masks(mask_source, {}, progress)
            seg_masks = jnp.broadcast_to(fixed, (b,) + fixed.shape)
        return imgs, seg_masks

    def loss_fn(nets, latents, batch, progress):
        generator, lpips, _ = nets
        imgs, seg_masks = render(nets, latents, progress)
        out = composite(imgs, seg_masks, batch["target"], batch.get("static_mask"))
        if settings.grey_loss:
            out = luminance_where_grey(out, batch["target"])
        feats = lpips.features(resize_for_lpips(out, settings.lpips_resolution))
        lp = lpips.distance_from_features(feats, batch["target_features"])
        total = lp
        parts = {"lpips": lp}
        if settings.l2_weight > 0:
            l2 = jnp.mean(jnp.square(out - batch["target"]), axis=(1, 2, 3))
            total = total + settings.l2_weight * l2
            parts["l2"] = l2
        if settings.lambda_reg > 0:
            disp = jax.vmap(dispersion)(latents["codes"])
            total = total + settings.lambda_reg * disp
            parts["dispersion"] = disp
        if settings.mean_latent_weight > 0:
            ml = jax.vmap(lambda c: _mean_latent_term(generator, c, space, batch["w_std"]))(latents["codes"])
            total = total + settings.mean_latent_weight * ml
            parts["mean_latent"] = ml
        if "noise" in latents:  # summed over the buffers, and over the segments of per-segment noise
            reg = jnp.sum(regularizer(latents["noise"]), axis=1)
            total = total + settings.noise_reg_weight * reg
            parts["noise_reg"] = reg
        parts["total"] = total
        return jnp.sum(total), parts

    return loss_fn, render


# Adam's eps for the mask parameters. Where the segments' codes are (nearly) equal, every segment renders
# the same image and the true gradient of the masks is (nearly) zero; with eps = 1e-8 Adam would blow
# rounding noise (~1e-9) up to full learning-rate steps, making the masks depend on float summation
# order (batch size, device count). 1e-6 damps that noise a thousandfold. The start's per-segment
# offsets (start_jitter) give the masks a real gradient at step 0 (~6e-6 on the tests' generator).
MASK_ADAM_EPS = 1e-6


def adam_directions():
    """Adam without its step size, per part of the latents (the step size, lr times NVIDIA's ramp, is applied
    by `Core.step` from the state, so that the learning rate is a value one can vmap over). The noise
    gets plain Adam as the codes do, as NVIDIA's projector optimises its buffers."""
    label = lambda k: k if k in ("codes", "noise") else "masks"
    labels = lambda latents: {k: jax.tree_util.tree_map(lambda _: label(k), v) for k, v in latents.items()}
    return optax.multi_transform({"codes": optax.scale_by_adam(), "noise": optax.scale_by_adam(),
                                  "masks": optax.scale_by_adam(eps=MASK_ADAM_EPS)}, labels)


# ---------------------------------------------------------------------------------------- the start
def image_seeds(targets) -> jax.Array:
    """[B] uint32, one per image from its pixels alone: the 8-bit levels of the image, weighted by a
    number per position and summed in wrapping uint32 arithmetic. Integer sums are exact in any order,
    so an image gets its number whatever its batch, its place in it or the devices."""
    levels = jnp.round((jnp.clip(targets, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint32)
    levels = levels.reshape(levels.shape[0], -1)
    weights = jnp.arange(levels.shape[1], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(0x9E3779B9)
    return jnp.sum((levels + jnp.uint32(1)) * weights, axis=1, dtype=jnp.uint32)


def jittered(codes, seeds, seed, scale):
    """codes [B, n, ...] (any pytree) plus N(0, scale^2) offsets drawn from each image's key
    (`seed` folded with its `seeds` entry): distinct segments, the same for an image wherever it is."""
    leaves, treedef = jax.tree_util.tree_flatten(codes)

    def one(image_seed):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), image_seed), len(leaves))
        return [jax.random.normal(k, x.shape[1:], jnp.float32) for k, x in zip(keys, leaves)]

    offsets = jax.vmap(one)(jnp.asarray(seeds, jnp.uint32))
    return jax.tree_util.tree_unflatten(treedef, [x + scale * o.astype(x.dtype) for x, o in zip(leaves, offsets)])


# ---------------------------------------------------------------------------------------- the core
@flax.struct.dataclass
class CoreState:
    """What changes from step to step. Leaves of `latents` and `opt_state` have the batch axis first;
    `step` and `lr` are scalars (vmap over `lr` to run several learning rates at once)."""

    latents: Any  # {"codes": [B, n, ...], the mask source's params [B, ...], "noise" with optimize_noise}
    opt_state: Any  # Adam's moments and count per part of the latents
    step: jax.Array  # int32: steps done (the schedule and the annealing masks follow it)
    lr: jax.Array  # float32: the peak learning rate of NVIDIA's schedule


@functools.partial(jax.jit, static_argnums=1)
def _prepare(generator, dtype):  # weight-only preprocessing, once per core (the weights stay fixed)
    return generator.prepare(dtype)


@flax.struct.dataclass
class Core:
    """One generator, LPIPS and mask source (pytree leaves) and the settings (static): see the module
    docstring. Build it with `inversion_core`."""

    generator: Any  # weight-prepared for the compute dtype
    lpips: Any
    mask_source: Any
    w_std: Any  # the spread of W for mean_latent_weight (1.0 when unused)
    seed: Any  # settings.seed, a value: it seeds the starting codes' offsets (start_jitter)
    settings: InversionSettings = flax.struct.field(pytree_node=False)

    def batch(self, targets, static_masks=None) -> dict:
        """The step's fixed inputs: targets [B, H, W, 3] in [-1, 1], their LPIPS features and, when
        given, the static masks S^X [B, H, W] (1: the composite keeps the target there)."""
        targets = jnp.asarray(targets, jnp.float32)
        batch = {"target": targets, "w_std": jnp.float32(self.w_std),
                 "target_features": self.lpips.features(resize_for_lpips(targets, self.settings.lpips_resolution))}
        if static_masks is not None:
            batch["static_mask"] = jnp.asarray(static_masks, jnp.float32)
        return batch

    def initial_latents(self, batch_size: int, initial_codes=None, seeds=None) -> dict:
        """The starting latents of `batch_size` images: the generator's starting codes (or
        `initial_codes` [B, n, ...]), the mask source's parameters and, with optimize_noise, the noise.
        seeds: `image_seeds` of the targets [B]; with learned masks and n > 1 they draw each image's
        per-segment offsets of the generator's starting codes (settings.start_jitter). None: all
        segments start equal."""
        s = self.settings
        rows = lambda tree: jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (batch_size,) + jnp.shape(x)), tree)
        params = self.mask_source.init(s.segments)
        if initial_codes is None:
            codes = rows(self.generator.initial_codes(s.space, s.segments))
            if seeds is not None and params and s.segments > 1 and s.start_jitter > 0:
                codes = jittered(codes, seeds, self.seed, s.start_jitter)
        else:
            codes = jax.tree_util.tree_map(jnp.asarray, initial_codes)
        latents = {"codes": codes}
        if s.optimize_noise:
            latents["noise"] = rows(initial_noise(self.generator, s.segments if s.noise_per_segment else 1))
        latents.update(rows(params))
        return latents

    def start(self, latents) -> CoreState:
        """The state at step 0 for these latents."""
        return CoreState(latents=latents, opt_state=adam_directions().init(latents), step=jnp.int32(0),
                         lr=jnp.float32(self.settings.lr))

    def init(self, targets, initial_codes=None) -> CoreState:
        """The state at step 0 for targets [B, H, W, 3] (their count, and their pixels seed the start)."""
        return self.start(self.initial_latents(jnp.shape(targets)[0], initial_codes, image_seeds(targets)))

    def step(self, state: CoreState, batch: dict) -> tuple[CoreState, dict]:
        """One Adam step on every image's latents: (the new state, the loss parts [B] at the old one)."""
        s = self.settings
        loss_fn, _ = make_loss_fn(s)
        progress = state.step.astype(jnp.float32) / s.steps  # what annealing mask sources follow
        grad = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
        (_, parts), grads = grad(self.nets, state.latents, batch, progress)
        directions, opt_state = adam_directions().update(grads, state.opt_state, state.latents)
        size = -1 * (state.lr * _ramp(state.step, s.steps))  # optax's scale_by_learning_rate, exactly
        updates = jax.tree_util.tree_map(lambda u: jnp.array(size, dtype=u.dtype) * u, directions)
        latents = optax.apply_updates(state.latents, updates)
        if "noise" in latents:  # renormalised after every step, as in NVIDIA's projector
            latents = dict(latents, noise=normalize(latents["noise"]))
        return CoreState(latents=latents, opt_state=opt_state, step=state.step + 1, lr=state.lr), parts

    @property
    def nets(self):
        return self.generator, self.lpips, self.mask_source

    def render(self, latents, progress=1.0):
        """(segment images [B, n, H, W, 3], masks [B, n, H, W]) of latents, as after `progress` of the
        inversion (1: the masks a result keeps)."""
        return make_loss_fn(self.settings)[1](self.nets, latents, progress)

    def evaluate(self, latents, batch, progress=1.0):
        """(segment images, masks, composite [B, H, W, 3], loss parts [B])."""
        imgs, seg_masks = self.render(latents, progress)
        _, parts = make_loss_fn(self.settings)[0](self.nets, latents, batch, progress)
        return imgs, seg_masks, composite(imgs, seg_masks, batch["target"], batch.get("static_mask")), parts


def inversion_core(generator, settings: InversionSettings | None = None, mask_source=None, *, lpips=None) -> Core:
    """The pure inversion for `generator` and `settings` (validated here; None: invert()'s defaults for
    this generator: its default space and lambda_reg). mask_source: a mask source
    (masks.options.make_mask_source; None: the default for this generator, seeded by settings.seed);
    lpips: an LPIPS object (None: the pretrained `settings.lpips_net`)."""
    s = (settings or InversionSettings()).validate(generator)
    if mask_source is None:
        mask_source = make_mask_source(None, s.segments, generator.resolution, seed=s.seed, generator=generator)
    if lpips is None:
        lpips = load_lpips(s.lpips_net, compute_dtype=s.dtype)
    w_std = w_std_of(generator) if s.mean_latent_weight > 0 else 1.0
    # The seed is a value of the core (it seeds the start) and the label is bound into the generator, so
    # neither is part of the static settings: every seed and class share one compiled step.
    return Core(generator=_prepare(generator, s.dtype), lpips=lpips, mask_source=mask_source, w_std=w_std,
                seed=int(s.seed), settings=dataclasses.replace(s, seed=0, label=None))
