"""Shared plumbing for the command-line tools in bin/: flag parsing, help, and error reporting.

A tool ends with ONE line on stderr and a documented exit status, never a traceback, when the cause is
the input, the options, the files or the machine (EXIT_STATUSES); a traceback means a bug. The tools
themselves only parse flags and call the library.
"""

from __future__ import annotations

import errno
import logging
import sys
from typing import Callable

from absl import flags

from .compilation_cache import enable_compilation_cache
from .errors import ChunkyGANError, ResourceError

EXIT_USAGE = 2  # bad input or options: one line on stderr, nothing written
EXIT_SOME_FAILED = 3  # bin/invert_dataset: some images failed (the manifest says why)
EXIT_RESOURCES = 4  # out of memory (host or accelerator) or disk space; or refused up front by an estimate
EXIT_OS = 5  # the operating system refused a read or write (permission, I/O error, ...)
EXIT_PREEMPTED = 75  # bin/invert_dataset: stopped by SIGTERM after the batch in flight (rerun to continue)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_STATUSES = """exit status:
  0    done
  1    an internal error (a bug; the traceback says where)
  2    bad input or options, or an output that may not or cannot be written (one line on stderr,
       nothing written)
  3    bin/invert_dataset only: some images failed (the summary counts them, the manifest says why)
  4    out of memory (host or accelerator) or out of disk space, or a request refused up front
       because its memory estimate exceeds what the machine has
  5    the operating system refused to read or write a file (permission, I/O error)
  75   bin/invert_dataset only: stopped by SIGTERM (preemption) once the batch in flight was written
       and the manifest flushed; rerun the same command to continue
  130  interrupted (Ctrl-C)
"""

_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM}

TUNING_FLAGS = ("tune_rank", "tune_lr", "tune_locality_weight", "tune_lpips_threshold")
TUNING_FLAG_NAMES = ("tune_steps",) + TUNING_FLAGS  # a tool declares them key flags: its --help lists them


def define_tuning_flags() -> None:
    """The pivotal-tuning flags of the tools that invert (bin/invert, bin/invert_dataset): one wording."""
    from .tuning import TuningSettings

    d = TuningSettings()
    flags.DEFINE_integer("tune_steps", 0, "pivotal tuning after the inversion: steps of tuning the generator's "
                         "drawing weights to each photo (a small delta stored with the result; 0 = off; "
                         "docs/tuning.md)", lower_bound=0)
    flags.DEFINE_integer("tune_rank", d.rank, "rank of the tuning's low-rank weight deltas (0 = full deltas)",
                         lower_bound=0)
    flags.DEFINE_float("tune_lr", d.lr, "tuning learning rate (Adam; a relative change of each weight tensor)",
                       lower_bound=0.0)
    flags.DEFINE_float("tune_locality_weight", d.locality_weight, "weight of the locality term that keeps "
                       "images at codes near the pivots unchanged", lower_bound=0.0)
    flags.DEFINE_float("tune_lpips_threshold", None, "stop tuning a photo once its LPIPS is at most this")


def tuning_from_flags():
    """TuningSettings from define_tuning_flags()'s flags, or None with --tune_steps=0 (the other tuning
    flags are then refused: they would do nothing)."""
    from .errors import ConfigError
    from .tuning import TuningSettings

    f = flags.FLAGS
    if not f.tune_steps:
        given = [name for name in TUNING_FLAGS if f[name].present]
        if given:
            raise ConfigError(f"--{given[0]} applies with --tune_steps=N (N > 0)")
        return None
    return TuningSettings(steps=f.tune_steps, rank=f.tune_rank, lr=f.tune_lr,
                          locality_weight=f.tune_locality_weight,
                          lpips_threshold=f.tune_lpips_threshold).validate()

flags.DEFINE_boolean("compilation_cache", True, "keep compiled programs on disk for the next run "
                     "(see chunkygan_jax/compilation_cache.py)")


class _HelpFlag(flags.BooleanFlag):
    """--help / -h (this tool's flags) and --helpfull (every flag of every module): print the tool's
    docstring, its flags with their meaning and default, and the exit statuses, then exit 0."""

    def __init__(self, name, short_name, full, text):
        super().__init__(name, False, text, short_name=short_name)
        self._full = full

    def parse(self, argument):
        super().parse(argument)
        if self.value:
            doc = (sys.modules["__main__"].__doc__ or "").strip("\n")
            listing = flags.FLAGS.get_help() if self._full else flags.FLAGS.main_module_help()
            more = "" if self._full else "\n(--helpfull also lists the flags every tool shares)\n"
            print(f"{doc}\n\nflags:\n{listing}\n{more}\n{EXIT_STATUSES}", end="")
            sys.exit(0)


if "help" not in flags.FLAGS:
    flags.DEFINE_flag(_HelpFlag("help", "h", False, "show this tool's flags (meaning, default) and exit"))
    flags.DEFINE_flag(_HelpFlag("helpfull", None, True, "show every flag, including those of libraries, and exit"))


def fail(message: str, status: int = EXIT_USAGE) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _first_line(text: str, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _os_message(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {e.strerror}" if where and e.strerror else _first_line(e)


def _out_of_device_memory(e: BaseException) -> bool:
    """XLA's allocation failures (JaxRuntimeError / XlaRuntimeError with status RESOURCE_EXHAUSTED)."""
    return type(e).__module__.split(".")[0] in ("jax", "jaxlib") and "RESOURCE_EXHAUSTED" in str(e)


def show_library_messages() -> None:
    """The library's INFO messages (e.g. io's "resized PHOTO from WxH to RxR") as plain lines on stderr."""
    logger = logging.getLogger("chunkygan_jax")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run(main: Callable[[], int | None], argv: list[str] | None = None) -> None:
    """Parse absl flags from argv (--help, -h and --helpfull print help and exit 0), run main(), and turn
    every error a user or the machine can cause into one line and its status (EXIT_STATUSES)."""
    argv = sys.argv if argv is None else argv
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{_first_line(e)} (see --help)")
    if len(rest) > 1:
        fail(f"unexpected positional arguments {rest[1:]}; every option is a --flag (see --help)")
    if flags.FLAGS.compilation_cache:  # the tools' one place to turn it on; the library never does
        enable_compilation_cache()
    show_library_messages()
    try:
        code = main()
    except ResourceError as e:
        fail(str(e), EXIT_RESOURCES)
    except ChunkyGANError as e:
        fail(str(e))
    except MemoryError:
        fail("out of host memory; use fewer segments, fewer images per batch or a smaller generator",
             EXIT_RESOURCES)
    except OSError as e:
        if e.errno in _OUT_OF_SPACE:
            fail(_os_message(e), EXIT_RESOURCES)
        fail(_os_message(e), EXIT_OS)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        if _out_of_device_memory(e):
            fail(f"out of accelerator memory ({_first_line(e)}); ask for less at once (fewer segments "
                 "or images per batch)", EXIT_RESOURCES)
        raise
    sys.exit(code or 0)
