"""JAX's persistent compilation cache, on by default, so that a second run of the same configuration
loads its compiled programs from disk instead of compiling them again.

Where: $CHUNKYGAN_JAX_COMPILATION_CACHE if it names a directory, else `jax/` in the package's cache
directory ($CHUNKYGAN_CACHE, else $XDG_CACHE_HOME/chunkygan_jax, else ~/.cache/chunkygan_jax). CHUNKYGAN_JAX_COMPILATION_CACHE=0 (or off/false/no) turns it off, and so
does the tools' --nocompilation_cache flag. A cache the user configured for JAX itself
(JAX_COMPILATION_CACHE_DIR or jax.config) is left exactly as it is.

The cache is trusted code: anyone who can write to its directory can make this process run anything,
so it lives in the user's own cache directory and is never shared.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from .files import cache_root

ENV = "CHUNKYGAN_JAX_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no")

# JAX writes only programs that took at least this long to compile (its default is 1 s). A 32 px
# inversion compiles a dozen programs of 0.1-1 s each, which together are most of a short run; below
# ~0.1 s loading an entry is not much faster than compiling it.
MIN_COMPILE_SECS = 0.1
# A bound on the directory (least recently used entries go first); it needs the optional filelock.
MAX_SIZE_BYTES = 4 << 30

_enabled_by_us: str | None = None


def default_cache_dir() -> Path:
    """<cache>/jax, in the project's cache folder (files.cache_root)."""
    return cache_root() / "jax"


def enable_compilation_cache() -> str | None:
    """Turn the cache on unless the user turned it off or configured JAX's own. Returns the directory
    in use (ours or the user's), or None when there is no cache."""
    global _enabled_by_us
    existing = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if existing:
        return existing
    choice = os.environ.get(ENV, "").strip()
    if choice.lower() in _OFF:
        return None
    path = Path(choice).expanduser() if choice and choice.lower() not in ("1", "on", "true", "yes") \
        else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without a cache rather than fail
        return None
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        try:
            import filelock  # noqa: F401  (JAX's size bound needs it)
            jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
        except ImportError:
            pass
    jax.config.update("jax_compilation_cache_dir", str(path))
    _enabled_by_us = str(path)
    return _enabled_by_us


def disable_compilation_cache() -> None:
    """Undo enable_compilation_cache() (the tools' --nocompilation_cache). A cache the user set up for
    JAX directly is not ours to turn off. Call it before anything is compiled."""
    global _enabled_by_us
    if _enabled_by_us is not None and jax.config.jax_compilation_cache_dir == _enabled_by_us:
        jax.config.update("jax_compilation_cache_dir", None)
    _enabled_by_us = None
