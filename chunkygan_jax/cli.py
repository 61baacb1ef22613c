"""Shared plumbing for the command-line tools in bin/: flag parsing and error reporting.

A user's mistake (bad flag, unreadable file, impossible option) ends with ONE line on stderr and exit
status 2, never a traceback; the tools themselves only parse flags and call the library.
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags

from .compilation_cache import disable_compilation_cache
from .errors import ChunkyGANError

EXIT_USAGE = 2  # bad input or options: one line on stderr, nothing written
EXIT_SOME_FAILED = 3  # bin/invert_dataset: some images failed (the manifest says why)

flags.DEFINE_boolean("compilation_cache", True, "keep compiled programs on disk for the next run "
                     "(see chunkygan_jax/compilation_cache.py)")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


HELP_FLAGS = ("--help", "-help", "-h", "--helpfull", "--helpshort")


def print_help(doc: str | None) -> None:
    """The tool's docstring and its flags, on stdout."""
    print((doc or "").strip() + "\n" + flags.FLAGS.main_module_help())


def run(main: Callable[[], int | None], argv: list[str] | None = None) -> None:
    """Parse absl flags from argv, run main(), and turn library errors into exit status 2. --help
    prints the calling tool's docstring and flags and exits 0."""
    argv = sys.argv if argv is None else argv
    if any(a in HELP_FLAGS for a in argv[1:]):
        print_help(getattr(sys.modules.get("__main__"), "__doc__", None))
        sys.exit(0)
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    if len(rest) > 1:
        fail(f"unexpected positional arguments {rest[1:]}; every option is a --flag")
    if not flags.FLAGS.compilation_cache:
        disable_compilation_cache()
    try:
        code = main()
    except ChunkyGANError as e:
        fail(str(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
