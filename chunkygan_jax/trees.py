"""Nested dicts of arrays (latents, parameters, heads) <-> flat {"a/b/c": array} dicts, for .npz files."""

from __future__ import annotations

import numpy as np

from .errors import ChunkyGANError


def flatten_tree(tree, sep: str = "/", prefix: str = "") -> dict[str, np.ndarray]:
    """{"codes": x, "net": {"w": y}} -> {"codes": x, "net/w": y} (numpy arrays)."""
    return {k: np.asarray(v) for k, v in flat_leaves(tree, sep, prefix).items()}


def flat_leaves(tree, sep: str = "/", prefix: str = "") -> dict:
    """Like `flatten_tree`, with the leaves as they are (traceable: jax arrays and tracers stay)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if sep in str(k):
                raise ChunkyGANError(f"tree key {k!r} contains {sep!r}")
            out.update(flat_leaves(v, sep, f"{prefix}{k}{sep}"))
        return out
    return {prefix[:-len(sep)] if prefix else prefix: tree}


def unflatten_tree(flat: dict[str, np.ndarray], sep: str = "/") -> dict:
    """The inverse of `flatten_tree`."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(sep)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree
