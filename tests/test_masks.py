"""The masks package: one rule for whether a source's masks are learned (`learn`, invert()'s
learn_masks), and its low modules import nothing of the segmenter or the option resolver."""

import ast
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from chunkygan_jax.errors import ConfigError
from chunkygan_jax.masks.options import LEARNED_BY_DEFAULT, learns, make_mask_source, mask_source_record
from chunkygan_jax.masks.sources import FixedMasks, LogitMasks, default_layout

ROOT = Path(__file__).resolve().parents[1]
R = 16


def _learned(source, n) -> bool:
    return bool(jax.tree_util.tree_leaves(source.init(n)))


@pytest.mark.parametrize("masks, learn, kind, learned", [
    ("logits", None, LogitMasks, True),
    ("logits", True, LogitMasks, True),
    ("layout", None, FixedMasks, False),
    ("layout", False, FixedMasks, False),
    ("user", None, FixedMasks, False),
    ("user", False, FixedMasks, False),
    ("user", True, LogitMasks, True),
])
def test_learn_none_is_the_sources_own_default(masks, learn, kind, learned):
    given = default_layout(3, R, seed=1) if masks == "user" else masks
    source = make_mask_source(given, 3, R, learn=learn)
    assert type(source) is kind and _learned(source, 3) == learned
    assert learns(masks, learn, 3) == learned
    assert mask_source_record(given, source, None, 3)["learned"] == learned
    if learn is None:
        assert LEARNED_BY_DEFAULT[masks] == learned


def test_user_masks_learned_start_where_they_are_given():
    given = default_layout(3, R, seed=1)
    fixed, learned = make_mask_source(given, 3, R), make_mask_source(given, 3, R, learn=True)
    np.testing.assert_allclose(np.asarray(fixed.masks({})), given, atol=1e-6)
    start = np.asarray(learned.masks(learned.init(3)))
    assert np.mean(start.argmax(0) == given.argmax(0)) > 0.9  # 16x16 logits of the same layout


@pytest.mark.parametrize("masks, learn, n, message", [
    ("logits", False, 3, "masks='layout'"),
    ("layout", True, 3, "masks='logits'"),
    ("logits", True, 1, "nothing to learn"),
    ("user", True, 1, "nothing to learn"),
    ("ready", False, 3, "decides what it learns"),
    ("ready", True, 3, "decides what it learns"),
    ("logits", "yes", 3, "True, False or None"),
])
def test_a_learn_that_makes_no_sense_is_refused(masks, learn, n, message):
    given = {"user": np.ones((n, R, R), np.float32), "ready": FixedMasks(np.ones((3, R, R), np.float32) / 3)}
    with pytest.raises(ConfigError, match=message):
        make_mask_source(given.get(masks, masks), n, R, learn=learn)


def test_one_segment_is_the_fixed_all_ones_mask():
    for masks in ("logits", "layout", "segmenter", None):
        source = make_mask_source(masks, 1, R, learn=False if masks == "layout" else None)
        assert isinstance(source, FixedMasks) and not _learned(source, 1)
        np.testing.assert_array_equal(np.asarray(source.masks({})), np.ones((1, R, R), np.float32))


def test_the_low_mask_modules_import_no_segmenter():
    # the simple sources, composition, colours and metrics stay importable without G^S, the option
    # resolver, the demo generator or the generators' checkpoints
    low = ["sources", "composite", "colors", "metrics"]
    code = ("import sys\n" + "".join(f"import chunkygan_jax.masks.{m}\n" for m in low)
            + "print(sorted(m for m in sys.modules if m.startswith('chunkygan_jax')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout)
    assert {f"chunkygan_jax.masks.{m}" for m in low} <= set(loaded)
    assert set(loaded) <= {"chunkygan_jax", "chunkygan_jax.errors", "chunkygan_jax.masks"} | \
        {f"chunkygan_jax.masks.{m}" for m in low}, loaded
