"""What every tool in bin/ shares (cli.py): help on --help / -h / --helpfull, and one line with a
documented exit status for every error a user or the machine causes."""

import ast
import errno
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chunkygan_jax import cli
from chunkygan_jax.errors import ConfigError, ResourceError

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.name for p in (ROOT / "bin").iterdir() if p.is_file() and not p.name.startswith("."))


def test_every_tool_helps_itself():
    runs = {(tool, form): subprocess.Popen([sys.executable, str(ROOT / "bin" / tool), form], text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)))
            for tool in TOOLS for form in ("--help", "-h", "--helpfull")}
    for (tool, form), proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (tool, form, err[-2000:])
        defined = re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', (ROOT / "bin" / tool).read_text())
        assert defined, tool
        for name in defined:  # every flag, with its help text
            assert re.search(rf"--(\[no\])?{name}: \S", out), (tool, form, name)
        assert "(default: " in out and "exit status:" in out and f"  {cli.EXIT_RESOURCES}    out of memory" in out
        doc = ast.get_docstring(ast.parse((ROOT / "bin" / tool).read_text()))
        assert out.startswith(doc.splitlines()[0]), (tool, out[:200])  # the usage comes first
        assert ("helpfull: show every flag" in out) == (form == "--helpfull")  # the full list adds cli's flags


@pytest.fixture
def quiet_library():
    """cli.run sets up the library's logger; put it back for the other tests."""
    logger = logging.getLogger("chunkygan_jax")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = state


def _status(capsys, error):
    def main():
        if callable(error):
            error()
        raise error

    with pytest.raises(SystemExit) as exit_:
        cli.run(main, ["tool"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return exit_.value.code, err


def test_errors_become_one_line_and_a_documented_status(capsys, quiet_library):
    import jax.numpy as jnp

    def xla_out_of_memory():  # a real allocation XLA cannot make
        jnp.zeros((1 << 42,), jnp.float32).block_until_ready()

    assert _status(capsys, ConfigError("bad option")) == (cli.EXIT_USAGE, "error: bad option\n")
    assert _status(capsys, ResourceError("too big"))[0] == cli.EXIT_RESOURCES
    assert _status(capsys, MemoryError())[0] == cli.EXIT_RESOURCES
    code, err = _status(capsys, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/x.png"))
    assert code == cli.EXIT_RESOURCES and "out/x.png: No space left on device" in err
    code, err = _status(capsys, PermissionError(errno.EACCES, os.strerror(errno.EACCES), "out"))
    assert code == cli.EXIT_OS and "out: Permission denied" in err
    code, err = _status(capsys, xla_out_of_memory)
    assert code == cli.EXIT_RESOURCES and "out of accelerator memory" in err and "RESOURCE_EXHAUSTED" in err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run(lambda: 1 / 0, ["tool"])
