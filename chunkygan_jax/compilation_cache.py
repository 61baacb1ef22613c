"""JAX's persistent compilation cache for the tools, so that a second run of the same configuration loads
its compiled programs from disk instead of compiling them again.

Importing chunkygan_jax changes nothing in JAX's configuration. The tools in bin/ call
enable_compilation_cache() (through cli.run; --nocompilation_cache skips it), and a program of yours may
call chunkygan_jax.enable_compilation_cache() itself, before it compiles anything.

Where: $CHUNKYGAN_JAX_COMPILATION_CACHE if it names a directory, else `jax/` in the package's cache
directory ($CHUNKYGAN_CACHE, else $XDG_CACHE_HOME/chunkygan_jax, else ~/.cache/chunkygan_jax).
CHUNKYGAN_JAX_COMPILATION_CACHE=0 (or off/false/no) turns it off. A cache the user configured for JAX
itself (JAX_COMPILATION_CACHE_DIR or jax.config) is left exactly as it is.

The size bound is ours, not JAX's. JAX's bound (jax_compilation_cache_max_size) keeps an `-atime` file
beside every entry, and once one entry lacks it (written without the bound, e.g. where `filelock` is
not installed, or by a process killed between the two writes) every later write fails with a warning
and nothing new is cached. So JAX's bound stays off (its default: entries are plain files) and
enable_compilation_cache() trims the directory once, when it is over MAX_SIZE_BYTES, least recently
used entries first. If the user turns JAX's bound on anyway, entries it cannot evict are dropped first.

The cache is trusted code: anyone who can write to its directory can make this process run anything,
so it lives in the user's own cache directory and is never shared.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .files import cache_root

ENV = "CHUNKYGAN_JAX_COMPILATION_CACHE"
_OFF = ("0", "off", "false", "no")
_ON = ("1", "on", "true", "yes")

# JAX writes only programs that took at least this long to compile (its default is 1 s). A 32 px
# inversion compiles a dozen programs of 0.1-1 s each, which together are most of a short run; below
# ~0.1 s loading an entry is not much faster than compiling it.
MIN_COMPILE_SECS = 0.1
# The directory's bound; trimming goes down to TRIM_TO of it, so that it runs seldom.
MAX_SIZE_BYTES = 4 << 30
TRIM_TO = 0.75
# An empty entry this old is what a process killed while writing it leaves behind (JAX would fail to
# read it on every run); a younger one may be a write in progress in another process.
STALE_EMPTY_SECS = 60.0

_ENTRY, _ATIME = "-cache", "-atime"  # JAX's file names: <key>-cache, and <key>-atime under its bound

_enabled_by_us: str | None = None


def default_cache_dir() -> Path:
    """<cache>/jax, in the project's cache folder (files.cache_root)."""
    return cache_root() / "jax"


def enable_compilation_cache() -> str | None:
    """Turn the cache on unless the user turned it off or configured JAX's own. Returns the directory
    in use (ours or the user's), or None when there is no cache."""
    import jax

    global _enabled_by_us
    existing = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if existing:
        return existing
    choice = os.environ.get(ENV, "").strip()
    if choice.lower() in _OFF:
        return None
    path = Path(choice).expanduser() if choice and choice.lower() not in _ON else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tidy(path, MAX_SIZE_BYTES, jax_bound=jax.config.jax_compilation_cache_max_size != -1)
    except OSError:  # a read-only home: run without a cache rather than fail
        return None
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
    jax.config.update("jax_compilation_cache_dir", str(path))
    _enabled_by_us = str(path)
    return _enabled_by_us


def disable_compilation_cache() -> None:
    """Undo enable_compilation_cache(). A cache the user set up for JAX directly is not ours to turn
    off. Call it before anything is compiled."""
    global _enabled_by_us
    if _enabled_by_us is None:
        return
    import jax

    if jax.config.jax_compilation_cache_dir == _enabled_by_us:
        jax.config.update("jax_compilation_cache_dir", None)
    _enabled_by_us = None


def _forget(path: Path, key: str) -> None:
    for suffix in (_ENTRY, _ATIME):
        try:
            (path / f"{key}{suffix}").unlink()
        except FileNotFoundError:  # another process removed it first
            pass


def tidy(path: Path, max_bytes: int, jax_bound: bool = False) -> int:
    """Keep a cache directory usable and bounded; returns the number of entries removed.

    Removes empty entries older than STALE_EMPTY_SECS, `-atime` files without their entry and, when
    JAX's own bound is on (jax_bound), entries without an `-atime` file. Then, if the entries add up to
    more than max_bytes, removes the least recently used ones (by the file's access or modification time)
    until they are under TRIM_TO of it. Each process does this once, before it compiles; a process
    reading an entry while another removes it just compiles the program again."""
    now = time.time()
    entries, atimes = {}, set()
    for f in path.iterdir():
        if f.name.endswith(_ATIME):
            atimes.add(f.name[:-len(_ATIME)])
        elif f.name.endswith(_ENTRY):
            try:
                entries[f.name[:-len(_ENTRY)]] = f.stat()
            except FileNotFoundError:
                pass
    removed = 0
    for key in atimes - entries.keys():
        _forget(path, key)
    for key, st in list(entries.items()):
        stale_empty = st.st_size == 0 and now - st.st_mtime > STALE_EMPTY_SECS
        if stale_empty or (jax_bound and key not in atimes):
            _forget(path, key)
            del entries[key]
            removed += 1
    total = sum(st.st_size for st in entries.values())
    if total > max_bytes:
        for key in sorted(entries, key=lambda k: max(entries[k].st_atime, entries[k].st_mtime)):
            if total <= TRIM_TO * max_bytes:
                break
            _forget(path, key)
            total -= entries[key].st_size
            removed += 1
    return removed
