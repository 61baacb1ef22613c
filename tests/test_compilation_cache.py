"""The persistent compilation cache: where it goes, how to turn it off, and that a cache the user set up
for JAX is never replaced. Each case runs in a fresh process, because the cache is set at import."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import jax, jax.numpy as jnp
import chunkygan_jax
from chunkygan_jax import compilation_cache
if "--disable" in sys.argv:
    compilation_cache.disable_compilation_cache()
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir}))
"""


def probe(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("JAX_COMPILATION_CACHE_DIR", "CHUNKYGAN_JAX_COMPILATION_CACHE", "CHUNKYGAN_CACHE")}
    base.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(ROOT),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)  # every program is written
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=base, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["dir"]


def entries(path):
    return [p for p in Path(path).iterdir() if p.name.endswith("-cache")] if Path(path).exists() else []


def test_on_by_default_in_the_users_cache_dir(tmp_path):
    expected = tmp_path / "xdg" / "chunkygan_jax" / "jax"
    assert probe(tmp_path) == str(expected)
    assert entries(expected)  # the program was written


def test_follows_the_package_cache_variable(tmp_path):
    assert probe(tmp_path, CHUNKYGAN_CACHE=str(tmp_path / "pkg")) == str(tmp_path / "pkg" / "jax")


def test_opt_out_by_variable_or_flag(tmp_path):
    assert probe(tmp_path, CHUNKYGAN_JAX_COMPILATION_CACHE="0") is None
    assert probe(tmp_path, "--disable") is None
    assert not entries(tmp_path / "xdg" / "chunkygan_jax" / "jax")


def test_variable_names_another_directory(tmp_path):
    assert probe(tmp_path, CHUNKYGAN_JAX_COMPILATION_CACHE=str(tmp_path / "mine")) == str(tmp_path / "mine")
    assert entries(tmp_path / "mine")


def test_the_users_own_jax_cache_is_kept(tmp_path):
    own = str(tmp_path / "jax-own")
    assert probe(tmp_path, JAX_COMPILATION_CACHE_DIR=own) == own
    assert probe(tmp_path, "--disable", JAX_COMPILATION_CACHE_DIR=own) == own  # not ours to turn off
    assert not (tmp_path / "xdg").exists()
