"""The pure inversion core (core.py) composed the way a JAX user composes it: their own jitted lax.scan
of `step` matches invert(), `step` vmaps over learning rates, and it runs under a 2-device
NamedSharding (simulated devices) with the single-device result."""

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chunkygan_jax.core import CoreState, InversionSettings, image_seeds, inversion_core, make_loss_fn
from chunkygan_jax.inversion import Monitor, invert
from chunkygan_jax.masks.options import make_mask_source

ROOT = Path(__file__).resolve().parents[1]
# Fixed masks: with every segment code equal at the start, learned masks get no gradient until the codes
# part, so their first steps follow rounding (docs/distributed.md); fixed ones make the comparison exact.
OPTIONS = dict(segments=2, steps=6, lr=0.1, lambda_reg=0.5, lpips_net="alex", lpips_resolution="full")
CODES_TOL = 1e-4  # for the bulk of the code elements: other fusions round differently


def _targets(resolution, count):
    rng = np.random.RandomState(3)
    return rng.uniform(-0.8, 0.8, (count, resolution, resolution, 3)).astype(np.float32)


def _docs_example() -> str:
    text = (ROOT / "docs" / "inversion.md").read_text()
    return re.search(r"## Inside your own JAX program.*?```python\n(.*?)```", text, flags=re.S).group(1)


@pytest.fixture(scope="module")
def sharded_run(tiny_checkpoint, tiny_generator, tmp_path_factory):
    """The 2-device run (SHARDED below), started first so that it compiles beside the in-process tests."""
    path = tmp_path_factory.mktemp("core") / "targets.npy"
    np.save(path, _targets(tiny_generator.resolution, 2))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.Popen([sys.executable, "-c", SHARDED, str(tiny_checkpoint), str(path), _docs_example()], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output = []

    def result():  # (stdout, stderr), waited for once
        if not output:
            output.extend(proc.communicate(timeout=300))
        assert proc.returncode == 0, output[1][-3000:]
        return output

    yield result
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def core(tiny_generator, sharded_run):
    settings = InversionSettings(space="w+", **OPTIONS)
    return inversion_core(tiny_generator, settings, make_mask_source("layout", 2, tiny_generator.resolution))


@jax.jit
def scanned(core, state, batch):
    """A user's program: every step of the schedule in one lax.scan."""
    def body(state, _):
        state, metrics = core.step(state, batch)
        return state, metrics["total"]

    return jax.lax.scan(body, state, None, length=core.settings.steps)


@pytest.fixture(scope="module")
def scan_run(core, tiny_generator):
    target = _targets(tiny_generator.resolution, 1)
    state = core.init(target)
    final, totals = scanned(core, state, core.batch(target))
    return target, state, final, totals


def test_user_scan_of_step_matches_invert(core, tiny_generator, scan_run):
    target, state, final, totals = scan_run
    assert isinstance(state, CoreState) and int(state.step) == 0 and int(final.step) == OPTIONS["steps"]
    ours = invert(target[0], tiny_generator, masks="layout", settings=OPTIONS, monitor=Monitor(every=0))
    codes = np.asarray(final.latents["codes"][0])
    moved = float(np.abs(codes - np.asarray(state.latents["codes"][0])).max())
    diff = np.abs(codes - ours.latents["codes"])
    print(f"scan vs invert(): codes moved {moved:.3g}; differences: median {np.median(diff):.2g}, "
          f"99% {np.quantile(diff, 0.99):.2g}, max {diff.max():.2g}")
    assert moved > 1e-2
    # Adam turns an element's gradient into a step of about lr whatever its size, so the few elements
    # whose gradient is near rounding differ more than the rest: the bulk is compared, and the loss.
    assert np.median(diff) <= 1e-6 and np.quantile(diff, 0.99) <= CODES_TOL
    np.testing.assert_allclose(np.asarray(totals[:, 0]), ours.loss_history, rtol=1e-4, atol=1e-6)
    lpips = float(core.evaluate(final.latents, core.batch(target))[3]["lpips"][0])
    assert abs(lpips - ours.final_losses["lpips"]) <= 1e-4


def test_step_vmaps_over_learning_rates(core, scan_run):
    target, state, final, _ = scan_run
    states = jax.vmap(lambda lr: state.replace(lr=lr))(jnp.asarray([OPTIONS["lr"], 0.02], jnp.float32))
    out, totals = jax.vmap(scanned, in_axes=(None, 0, None))(core, states, core.batch(target))
    assert totals.shape == (2, OPTIONS["steps"], 1)
    codes = np.asarray(out.latents["codes"])
    start = np.asarray(state.latents["codes"])
    diff = np.abs(codes[0] - np.asarray(final.latents["codes"]))  # the lane of lr = OPTIONS["lr"]
    assert np.median(diff) <= 1e-6 and np.quantile(diff, 0.99) <= CODES_TOL
    moved = [float(np.abs(c - start).mean()) for c in codes]
    print(f"mean code move: lr {OPTIONS['lr']}: {moved[0]:.3g}, lr 0.02: {moved[1]:.3g}")
    assert moved[1] < 0.5 * moved[0]  # the other lane ran with its own, smaller learning rate


def test_the_start_is_seeded_per_image_and_gives_the_masks_a_gradient(tiny_generator):
    """Learned masks with start_jitter (off by default): each segment starts from its own code, drawn
    from the image's pixels and the seed, so an image starts the same alone or anywhere in a batch, and
    the masks' gradient is real at step 0 (with equal codes it is rounding only)."""
    targets = _targets(tiny_generator.resolution, 3)
    settings = InversionSettings(space="w+", **{**OPTIONS, "start_jitter": 1e-3})
    core = inversion_core(tiny_generator, settings, make_mask_source("logits", 2, tiny_generator.resolution))
    codes = lambda c, t: np.asarray(c.init(t).latents["codes"])
    batch, alone, reverse = codes(core, targets), codes(core, targets[1:2]), codes(core, targets[::-1])
    assert np.array_equal(batch[1], alone[0]) and np.array_equal(batch[1], reverse[1])
    assert np.array_equal(np.asarray(image_seeds(targets))[1:2], np.asarray(image_seeds(targets[1:2])))
    w_avg = np.asarray(tiny_generator.w_avg)
    offsets = batch - w_avg
    assert abs(float(offsets.std()) / settings.start_jitter - 1) < 0.1  # N(0, start_jitter^2)
    assert np.abs(offsets[:, 0] - offsets[:, 1]).min() > 0  # distinct segments ...
    assert np.abs(offsets[0] - offsets[2]).max() > settings.start_jitter  # ... and images
    reseeded = inversion_core(tiny_generator, dataclasses.replace(settings, seed=1), core.mask_source)
    assert not np.array_equal(codes(reseeded, targets), batch)

    flat = inversion_core(tiny_generator, dataclasses.replace(settings, start_jitter=0.0), core.mask_source)
    loss = make_loss_fn(core.settings)[0]
    grad = jax.jit(jax.grad(lambda c, latents, b: loss(c.nets, latents, b, 0.0)[0], argnums=1))
    b = core.batch(targets[:1])
    mask_grad = lambda c: float(jnp.abs(grad(c, c.init(targets[:1]).latents, b)["mask_logits"]).max())
    jittered, equal = mask_grad(core), mask_grad(flat)
    print(f"largest mask-logit gradient at step 0: jittered start {jittered:.3g}, equal codes {equal:.3g}")
    assert jittered > 1e-7 and equal < 1e-3 * jittered


SHARDED = textwrap.dedent("""
    import sys, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from chunkygan_jax.checkpoints import load_generator
    from chunkygan_jax.core import InversionSettings, inversion_core
    from chunkygan_jax.masks.options import make_mask_source
    assert jax.device_count() == 2, jax.devices()
    g = load_generator(sys.argv[1])
    core = inversion_core(g, InversionSettings(space="w+", **{options}), make_mask_source("layout", 2, g.resolution))
    targets = np.load(sys.argv[2])

    @jax.jit
    def run(core, state, batch):
        return jax.lax.scan(lambda s, _: (core.step(s, batch)[0], None), state, None, length=4)[0]

    single = run(core, core.init(targets), core.batch(targets))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows, everywhere = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    place = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.device_put(x, rows if np.ndim(x) and np.shape(x)[0] == len(targets) else everywhere), tree)
    sharded = run(jax.device_put(core, everywhere), place(core.init(targets)), place(core.batch(targets)))
    codes = sharded.latents["codes"]
    assert codes.sharding.is_equivalent_to(rows, codes.ndim), codes.sharding
    assert len({{s.device for s in codes.addressable_shards}}) == 2
    diff = np.abs(np.asarray(codes) - np.asarray(single.latents["codes"]))
    print("DIFF", np.median(diff), np.quantile(diff, 0.99),
          float(np.abs(np.asarray(codes) - np.asarray(core.init(targets).latents["codes"])).max()))

    # docs/inversion.md's example, as written (here, to compile beside the in-process tests)
    namespace = {{}}
    exec(compile(sys.argv[3], "docs/inversion.md", "exec"), namespace)
    settings = InversionSettings(space="w+", **dict({options}, steps=3))
    latents, lpips = namespace["invert_in_my_program"](g, targets, settings)
    print("EXAMPLE", sorted(latents), latents["codes"].shape[:2], lpips.shape, bool(np.isfinite(lpips).all()))
""").format(options=repr(OPTIONS))


def test_step_runs_under_a_two_device_named_sharding(sharded_run):
    stdout, _ = sharded_run()
    median, q99, moved = map(float, stdout.split("DIFF")[1].split("EXAMPLE")[0].split())
    print(f"2 devices vs 1: codes moved {moved:.3g}; differences: median {median:.2g}, 99% {q99:.2g}")
    assert moved > 1e-2 and median <= 1e-6 and q99 <= CODES_TOL


def test_the_docs_example_runs(sharded_run):
    """docs/inversion.md's example of the core inside a user's jitted program, run as written (in the
    2-device process, on one device): the default masks (G^S, X^S learned), 3 steps, 2 images."""
    assert len(_docs_example().splitlines()) <= 18
    stdout, _ = sharded_run()
    assert stdout.split("EXAMPLE")[1].split() == ["['codes',", "'segment_code']", "(2,", "2)", "(3,", "2)", "True"]
