"""The public API's signatures stay short: every public function and method of the package takes at most
MAX_PARAMETERS parameters. What many settings need goes into one settings object (InversionSettings,
MaskSettings, io.ReadOptions, Monitor, TuningSettings, DatasetOptions, SavedEdit, ...): dataclass
constructors are those objects' fields, so they are not counted."""

import dataclasses
import importlib
import inspect
import pkgutil

import chunkygan_jax

MAX_PARAMETERS = 12


def _public_callables():
    for info in pkgutil.walk_packages(chunkygan_jax.__path__, "chunkygan_jax."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr == "__init__" and dataclasses.is_dataclass(obj):
                        continue  # a settings object's or a record's fields
                    if (attr == "__init__" or not attr.startswith("_")) and inspect.isfunction(member):
                        yield f"{module.__name__}.{name}.{attr}", member


def _count(fn) -> int:
    return sum(1 for p in inspect.signature(fn).parameters if p not in ("self", "cls"))


def test_no_public_signature_takes_more_than_twelve_parameters():
    seen = dict(_public_callables())
    assert "chunkygan_jax.inversion.invert" in seen and "chunkygan_jax.dataset.invert_dataset" in seen
    too_long = {name: _count(fn) for name, fn in seen.items() if _count(fn) > MAX_PARAMETERS}
    assert not too_long, f"public signatures over {MAX_PARAMETERS} parameters: {too_long}"
    assert max(map(_count, seen.values())) <= MAX_PARAMETERS


def test_the_drivers_share_one_settings_object():
    """invert, invert_batch, invert_dataset and local_edit take the same InversionSettings (or a dict of
    its fields), and its defaults are the ones written in the class: one home for each default."""
    from chunkygan_jax.core import InversionSettings, as_settings
    from chunkygan_jax.dataset import invert_dataset
    from chunkygan_jax.editing.region import local_edit
    from chunkygan_jax.inversion import invert, invert_batch

    for fn in (invert, invert_batch, invert_dataset, local_edit):
        assert "settings" in inspect.signature(fn).parameters, fn.__name__
    assert as_settings(None) == InversionSettings()
    assert as_settings({"lr": 0.05}, steps=7) == InversionSettings(lr=0.05, steps=7)
    assert as_settings(InversionSettings(steps=3), steps=None).steps == 3  # a shorthand left out keeps the field
