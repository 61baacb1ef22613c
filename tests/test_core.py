"""The pure inversion core (core.py) composed the way a JAX user composes it: their own jitted lax.scan
of `step` matches invert(), `step` vmaps over learning rates, and it runs under a 2-device
NamedSharding (simulated devices) with the single-device result."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chunkygan_jax.core import CoreState, InversionSettings, inversion_core
from chunkygan_jax.inversion import invert
from chunkygan_jax.mask_sources import make_mask_source

ROOT = Path(__file__).resolve().parents[1]
# Fixed masks: with every segment code equal at the start, learned masks get no gradient until the codes
# part, so their first steps follow rounding (docs/distributed.md); fixed ones make the comparison exact.
OPTIONS = dict(segments=2, steps=6, lr=0.1, lambda_reg=0.5, lpips_net="alex", lpips_resolution="full")
CODES_TOL = 1e-4  # for the bulk of the code elements: other fusions round differently


def _targets(resolution, count):
    rng = np.random.RandomState(3)
    return rng.uniform(-0.8, 0.8, (count, resolution, resolution, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def sharded_run(tiny_checkpoint, tiny_generator, tmp_path_factory):
    """The 2-device run (SHARDED below), started first so that it compiles beside the in-process tests."""
    path = tmp_path_factory.mktemp("core") / "targets.npy"
    np.save(path, _targets(tiny_generator.resolution, 2))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.Popen([sys.executable, "-c", SHARDED, str(tiny_checkpoint), str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    proc.kill()
    proc.communicate()


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
    ours = invert(target[0], tiny_generator, masks="layout", progress_every=0, **OPTIONS)
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


SHARDED = textwrap.dedent("""
    import sys, jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from chunkygan_jax.checkpoints import load_generator
    from chunkygan_jax.core import InversionSettings, inversion_core
    from chunkygan_jax.mask_sources import make_mask_source
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
""").format(options=repr(OPTIONS))


def test_step_runs_under_a_two_device_named_sharding(sharded_run):
    stdout, stderr = sharded_run.communicate(timeout=300)
    assert sharded_run.returncode == 0, stderr[-3000:]
    median, q99, moved = map(float, stdout.split("DIFF")[1].split())
    print(f"2 devices vs 1: codes moved {moved:.3g}; differences: median {median:.2g}, 99% {q99:.2g}")
    assert moved > 1e-2 and median <= 1e-6 and q99 <= CODES_TOL
