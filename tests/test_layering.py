"""The package's imports point one way: every module imports only modules of lower layers (or of its own
layer, without cycles). Lazy imports inside functions count too. The layers are WORKSPACE.md's."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "chunkygan_jax"

# Lowest first. A module may import modules of its own layer or lower ones, never higher ones.
# An entry names a module or a package (dotted below chunkygan_jax); a module takes the layer of the
# longest entry that is it or a package above it. A package whose submodules sit in different layers
# (masks/) is split: each submodule has its own entry, and the package's own entry covers only its
# __init__, so a new submodule there must be given a layer.
LAYERS = [
    ["errors", "paths", "trees", "files", "progress", "safe_pickle", "compilation_cache", "compute"],
    ["io", "lpips", "blending", "sharding", "generators", "identity", "noise"],
    ["converters", "masks", "masks.sources", "masks.composite", "masks.colors", "masks.metrics", "align",
     "deltas"],
    ["checkpoints", "results", "groups"],
    ["demo", "masks.segmenter"],
    ["masks.options", "tuning"],
    ["core", "inversion"],
    ["editing", "dataset", "report", "evaluate"],
    ["cli", "editor"],
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
SPLIT = {name.rpartition(".")[0] for name in LAYER_OF if "." in name}  # packages split over layers


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for the package and the converters folder it installs."""
    found = {}
    for base, prefix in ((ROOT / PACKAGE, PACKAGE), (ROOT / "converters", f"{PACKAGE}.converters")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix] + parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every package module `name` imports, at the top or inside functions."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (here[:len(here) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            base = [p for p in base if p]
            # `from .pkg import x`: the module pkg.x if there is one, else pkg itself
            targets = [".".join(base + [a.name]) if ".".join(base + [a.name]) in MODULES else ".".join(base)
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # `from .x import name`: the module is x
                t = t.rpartition(".")[0]
            if t and t != name and t != PACKAGE:
                out.add(t)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items() if name != PACKAGE}


def _entry(name: str) -> str | None:
    """The LAYERS entry that gives the module `name` (dotted, from chunkygan_jax) its layer, or None."""
    parts = name.split(".")[1:]
    for k in range(len(parts), 0, -1):
        entry = ".".join(parts[:k])
        if entry in LAYER_OF and (k == len(parts) or entry not in SPLIT):
            return entry
    return None


def _layer(name: str) -> int:
    return LAYER_OF[_entry(name)]


def _upward(name: str, imports) -> list[str]:
    return sorted(t for t in imports if _layer(t) > _layer(name))


def test_every_module_has_a_layer():
    missing = sorted(n for n in GRAPH if _entry(n) is None)
    assert not missing, f"modules without a layer (add them to LAYERS and WORKSPACE.md): {missing}"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name):
    up = _upward(name, GRAPH[name])
    assert not up, f"{name} imports {up}, which sit in higher layers"


def test_the_layers_of_a_split_package():
    # masks/ spans layers: its simple sources sit low, G^S above the checkpoints, the option resolver
    # above G^S; an import from the sources up to the segmenter or the options is refused
    pkg = f"{PACKAGE}.masks"
    assert _layer(f"{pkg}.sources") == _layer(f"{pkg}.metrics") == _layer(pkg) < _layer(f"{PACKAGE}.checkpoints")
    assert _layer(f"{pkg}.segmenter.heads") == _layer(f"{pkg}.segmenter") == _layer(f"{PACKAGE}.demo")
    assert _layer(f"{pkg}.options") == _layer(f"{PACKAGE}.tuning")
    assert _upward(f"{pkg}.sources", {f"{pkg}.segmenter.kmeans", f"{pkg}.options", f"{PACKAGE}.errors"}) == \
        [f"{pkg}.options", f"{pkg}.segmenter.kmeans"]
    assert _upward(f"{pkg}.options", {f"{pkg}.segmenter", f"{pkg}.sources"}) == []
    assert _entry(f"{pkg}.unlisted") is None  # a new submodule of a split package needs its own entry


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m in GRAPH and not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if not state.get(n):
            visit(n)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    # the guard itself: a lazy upward import inside a function is found
    src = "def f():\n    from ...inversion import invert\n    from . import heads\n    from ..sources import FixedMasks\n"
    path = tmp_path / "x.py"
    path.write_text(src)
    assert _imports("chunkygan_jax.masks.segmenter.x", path) == {
        "chunkygan_jax.inversion", "chunkygan_jax.masks.segmenter.heads", "chunkygan_jax.masks.sources"}
