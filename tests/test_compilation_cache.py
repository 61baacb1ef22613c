"""The persistent compilation cache: import changes nothing, enable_compilation_cache() (what every tool
calls) puts it in the right place, a cache the user set up for JAX is never replaced, and the cache keeps
working, without warnings, after other environments, killed processes or concurrent tools used it. Each
JAX case runs in a fresh process, because JAX reads the cache settings once."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import compilation_cache

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import jax, jax.numpy as jnp
import chunkygan_jax
if "--enable" in sys.argv:
    chunkygan_jax.enable_compilation_cache()
if "--disable" in sys.argv:
    chunkygan_jax.compilation_cache.disable_compilation_cache()
size = int(sys.argv[1])  # one program per size
jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)(jnp.ones((size, size))).block_until_ready()
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir}))
"""


def clean_env(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("JAX_COMPILATION_CACHE_DIR", "CHUNKYGAN_JAX_COMPILATION_CACHE", "CHUNKYGAN_CACHE",
                         "JAX_COMPILATION_CACHE_MAX_SIZE", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    base.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **env)
    return base


def probe(tmp_path, *args, size=8, **env):
    env = clean_env(tmp_path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)  # every program is written
    proc = subprocess.run([sys.executable, "-c", PROBE, str(size), *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warn" not in proc.stderr.lower(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["dir"]


def entries(path):
    return sorted(p.name for p in Path(path).iterdir() if p.name.endswith("-cache")) if Path(path).exists() else []


def test_import_leaves_jax_configuration_alone(tmp_path):
    code = ("import jax; c = dict(jax.config.values); import chunkygan_jax, chunkygan_jax.cli; "
            "assert dict(jax.config.values) == c, {k: v for k, v in jax.config.values.items() if c.get(k) != v}")
    proc = subprocess.run([sys.executable, "-c", code], env=clean_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert probe(tmp_path) is None  # and nothing turns the cache on behind the user's back
    assert not (tmp_path / "xdg").exists()


def test_enabled_in_the_users_cache_dir(tmp_path):
    expected = tmp_path / "xdg" / "chunkygan_jax" / "jax"
    assert probe(tmp_path, "--enable") == str(expected)
    assert entries(expected)  # the program was written


def test_follows_the_package_cache_variable(tmp_path):
    assert probe(tmp_path, "--enable", CHUNKYGAN_CACHE=str(tmp_path / "pkg")) == str(tmp_path / "pkg" / "jax")


def test_opt_out_by_variable_or_disable(tmp_path):
    assert probe(tmp_path, "--enable", CHUNKYGAN_JAX_COMPILATION_CACHE="0") is None
    assert probe(tmp_path, "--enable", "--disable") is None
    assert not entries(tmp_path / "xdg" / "chunkygan_jax" / "jax")


def test_variable_names_another_directory(tmp_path):
    mine = tmp_path / "mine"
    assert probe(tmp_path, "--enable", CHUNKYGAN_JAX_COMPILATION_CACHE=str(mine)) == str(mine)
    assert entries(mine)


def test_the_users_own_jax_cache_is_kept(tmp_path):
    own = str(tmp_path / "jax-own")
    assert probe(tmp_path, "--enable", JAX_COMPILATION_CACHE_DIR=own) == own
    assert probe(tmp_path, "--enable", "--disable", JAX_COMPILATION_CACHE_DIR=own) == own  # not ours to turn off
    assert not (tmp_path / "xdg").exists()


@pytest.mark.skipif(importlib.util.find_spec("filelock") is None,
                    reason="JAX's size bound needs the filelock package (in the dev extra)")
@pytest.mark.parametrize("bound", ["ours", "jax"])
def test_a_cache_written_without_a_bound_keeps_caching_with_one(tmp_path, bound):
    """An entry without JAX's `-atime` file (written by an environment without the bound) made every
    later write under JAX's bound fail with a warning; now the next environment keeps caching."""
    cache = tmp_path / "cache"
    probe(tmp_path, "--enable", size=8, CHUNKYGAN_JAX_COMPILATION_CACHE=str(cache),
          JAX_COMPILATION_CACHE_MAX_SIZE="-1")
    before = entries(cache)
    assert before and not list(cache.glob("*-atime"))
    env = {"JAX_COMPILATION_CACHE_MAX_SIZE": str(1 << 30)} if bound == "jax" else {}
    probe(tmp_path, "--enable", size=9, CHUNKYGAN_JAX_COMPILATION_CACHE=str(cache), **env)  # no warning
    assert set(entries(cache)) - set(before)  # the new program was written
    if bound == "jax":  # every entry left has what JAX's eviction reads
        assert all((cache / (name[:-len("-cache")] + "-atime")).exists() for name in entries(cache))


def touch(path, size, age):
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))


def test_tidy_trims_least_recently_used_and_drops_leftovers(tmp_path):
    for i in range(8):  # entry 0 is the oldest
        touch(tmp_path / f"k{i}-cache", 100, age=1000 - i)
    touch(tmp_path / "k3-atime", 8, age=0)
    touch(tmp_path / "gone-atime", 8, age=0)  # its entry is gone
    touch(tmp_path / "dead-cache", 0, age=3600)  # a process killed while writing it
    touch(tmp_path / "busy-cache", 0, age=0)  # another process writing it now
    assert compilation_cache.tidy(tmp_path, max_bytes=800) == 1  # within the bound: only the dead one
    assert compilation_cache.tidy(tmp_path, max_bytes=700) == 3  # down to 3/4 of 700: 500 bytes
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["busy-cache", "k3-atime", "k3-cache", "k4-cache", "k5-cache", "k6-cache", "k7-cache"]
    assert compilation_cache.tidy(tmp_path, max_bytes=700, jax_bound=True) == 5  # JAX's bound: no -atime, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k3-atime", "k3-cache"]


def test_two_tools_at_once_share_the_cache_without_warnings(tiny_checkpoint, tmp_path):
    """Two bin/invert runs at once on one cache that an environment without a size bound wrote first:
    both finish, neither prints a cache warning, and their programs were written."""
    cache = tmp_path / "cache"
    probe(tmp_path, "--enable", CHUNKYGAN_JAX_COMPILATION_CACHE=str(cache), JAX_COMPILATION_CACHE_MAX_SIZE="-1")
    before = entries(cache)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(photo)
    env = clean_env(tmp_path, CHUNKYGAN_JAX_COMPILATION_CACHE=str(cache), CHUNKYGAN_CACHE=str(tmp_path / "pkg"))
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bin" / "invert"), f"--image={photo}",
                               f"--generator={tiny_checkpoint}", f"--output_dir={tmp_path / f'out{i}'}",
                               "--steps=1", "--segments=1", "--lpips_net=alex",
                               "--lpips_resolution=full"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
        assert "warn" not in err.lower() and "cache" not in err.lower(), err
    assert len(entries(cache)) > len(before)
