"""How coherent masks are, judged on their label maps (argmax): `neighbour_agreement` (1 - normalised
boundary length), `connected_pieces` per label, and `mask_coherence` (both, plus how decided soft masks
are)."""

from __future__ import annotations

import numpy as np

from ..errors import ImageError


def neighbour_agreement(labels) -> float:
    """Fraction of 4-neighbour pixel pairs with the same label in a label map [..., H, W]
    (1 - normalised boundary length)."""
    labels = np.asarray(labels)
    same = np.concatenate([(labels[..., 1:, :] == labels[..., :-1, :]).reshape(-1),
                           (labels[..., :, 1:] == labels[..., :, :-1]).reshape(-1)])
    return float(same.mean())


def connected_pieces(labels) -> np.ndarray:
    """Number of 4-connected pieces of each label in a label map [H, W] -> int array [max label + 1]
    (0 for a label that does not occur). A coherent segmentation has about one piece per segment;
    scattered labels ("confetti") have many. Union-find over the map's 4-neighbour pairs, in numpy."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ImageError(f"connected_pieces takes one label map [H, W], got shape {labels.shape}")
    h, w = labels.shape
    parent = np.arange(h * w)
    flat = labels.reshape(-1)
    idx = parent.reshape(h, w)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])]
    a = np.concatenate([p[0].reshape(-1) for p in pairs])
    b = np.concatenate([p[1].reshape(-1) for p in pairs])
    same = flat[a] == flat[b]
    a, b = a[same], b[same]
    while True:  # hook roots onto the smaller root, then compress paths, until no pair joins two trees
        ra, rb = parent[a], parent[b]
        while True:
            ra2, rb2 = parent[ra], parent[rb]
            if np.array_equal(ra2, ra) and np.array_equal(rb2, rb):
                break
            ra, rb = ra2, rb2
        differ = ra != rb
        if not differ.any():
            break
        lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    roots = np.unique(parent)
    return np.bincount(flat[roots], minlength=int(flat.max()) + 1 if flat.size else 0)


def mask_coherence(masks) -> dict:
    """How coherent soft masks [n, H, W] are, judged on their argmax: connected pieces in total and per
    segment (n: one piece each; confetti: many), and neighbour agreement; and how decided they are:
    `top_weight`, the mean over pixels of the largest mask's weight (1: hard masks, 1/n: even blends)."""
    masks = np.asarray(masks)
    labels = masks.argmax(axis=0)
    pieces = connected_pieces(labels)
    return {"pieces": int(pieces.sum()), "pieces_per_segment": float(pieces.sum() / masks.shape[0]),
            "pieces_by_segment": [int(p) for p in np.pad(pieces, (0, masks.shape[0] - len(pieces)))],
            "neighbour_agreement": neighbour_agreement(labels), "top_weight": float(masks.max(axis=0).mean())}
