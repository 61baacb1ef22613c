"""The declared generator protocol (generators/protocol.py): both generators implement it, and the library
reads nothing off a generator that it does not declare, and probes for nothing."""

import ast
import re
from pathlib import Path

import pytest

from chunkygan_jax.errors import ConfigError
from chunkygan_jax.generators import DCGAN
from chunkygan_jax.generators.dcgan import DCGANConfig, random_params
from chunkygan_jax.generators.protocol import Generator, WSpaceGenerator, require_generator

LIBRARY = Path(__file__).resolve().parents[1] / "chunkygan_jax"
GENERATOR_NAMES = ("generator", "g", "gen")  # what the library calls a generator


def members(protocol) -> set:
    names = set()
    for cls in protocol.__mro__:
        if cls is object:
            continue
        names |= set(getattr(cls, "__annotations__", {}))
        names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names


def test_both_generators_implement_the_protocol(tiny_generator):
    dcgan = DCGAN(config=DCGANConfig(), params=random_params(0))
    assert isinstance(dcgan, Generator) and isinstance(tiny_generator, WSpaceGenerator)
    assert "w" in tiny_generator.latent_spaces and "w" not in dcgan.latent_spaces
    assert dcgan.noise_buffers() == {} and tiny_generator.noise_buffers()
    assert dcgan.prepare() is dcgan
    require_generator(dcgan)
    with pytest.raises(ConfigError, match="lacks"):
        require_generator(object())


def test_the_library_reads_only_declared_members_and_never_probes():
    declared = members(WSpaceGenerator)
    read, probes = {}, []
    for path in LIBRARY.rglob("*.py"):
        if "generators" in path.parts:  # the generators' own code reads their internals
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in GENERATOR_NAMES:
                read.setdefault(node.attr, set()).add(path.name)
        probes += [f"{path.name}: {m.group(0)}" for m in
                   re.finditer(r"\b(?:hasattr|getattr)\((?:%s)\b[^)]*\)" % "|".join(GENERATOR_NAMES), text)]
    undeclared = {k: sorted(v) for k, v in read.items() if k not in declared}
    assert not undeclared, undeclared
    assert not probes, probes
