"""The editor's request bodies, checked at the edge before the session sees them.

A body is bounded in size by the server; here its nesting is bounded on the raw bytes before any
parsing (so no deeply nested body reaches the JSON parser), numbers are plain finite JSON numbers of
at most `MAX_DIGITS` digits (no NaN or Infinity), and each route's body must match its schema: known
keys only, strict types (no booleans or strings for numbers, no floats for integers) and documented
bounds. Every refusal is a `RequestError`, one line naming the field."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from ..errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_STRENGTH", "RequestError", "loads", "edit_body", "blend_body", "task_body",
           "export_body", "empty_body", "check_edit", "check_steps"]

MAX_DEPTH = 6          # the deepest valid body is {"edit": {"target": {"segments": [...]}}}: 4
MAX_DIGITS = 20        # more digits than any bound below needs
MAX_STRENGTH = 100.0
MAX_STEPS = 5000
MAX_INDEX = 1 << 20    # segment indices, layer ids, ws rows, channels: checked exactly by the session
MAX_TEXT = 256         # names and ids
MAX_LIST = 4096


class RequestError(ConfigError):
    """A request body that does not match its route's schema."""


# ------------------------------------------------------------------------------------------ parsing
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _depth(data: bytes) -> int:
    """The deepest bracket nesting of JSON text, strings left out (vectorised: 8 MiB in milliseconds)."""
    bare = np.frombuffer(_STRINGS.sub(b'""', data), np.uint8)
    step = (np.isin(bare, (ord("["), ord("{"))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}"))))
    return int(np.cumsum(step).max(initial=0))


def _reject_constant(name):
    raise RequestError(f"the request body holds {name}: numbers must be finite")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise RequestError(f"a number in the request body has more than {MAX_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(f"the number {text[:40]} in the request body is out of range")
    return value


def loads(data: bytes) -> dict:
    """A JSON object from a request body (empty means {}), its nesting bounded before parsing."""
    if not data.strip():
        return {}
    if _depth(data) > MAX_DEPTH:
        raise RequestError(f"the request body is nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_int=_int,
                           parse_float=_float)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError("the request body is not JSON") from None
    except RecursionError:  # unreachable after the depth check; kept so a parser change stays a 400
        raise RequestError(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise RequestError("the request body must be a JSON object")
    return value


# ------------------------------------------------------------------------------------------ checkers
def _keys(d, where: str, allowed: set[str], required: tuple = ()) -> dict:
    if not isinstance(d, dict):
        raise RequestError(f"{where} must be a JSON object, got {_show(d)}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise RequestError(f"{where} has unknown field {unknown[0]!r} (fields: {', '.join(sorted(allowed))})")
    for k in required:
        if k not in d:
            raise RequestError(f"{where} needs the field {k!r}")
    return d


def _show(v) -> str:
    text = json.dumps(v) if isinstance(v, (bool, str, type(None))) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def number(v, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestError(f"{where} must be a number, got {_show(v)}")
    if not lo <= v <= hi:  # ints compare exactly, however large
        raise RequestError(f"{where} must lie in [{lo:g}, {hi:g}]")
    return float(v)


def integer(v, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"{where} must be an integer, got {_show(v)}")
    if not lo <= v <= hi:
        raise RequestError(f"{where} must be an integer in {lo}..{hi}, got {v}")
    return v


def text(v, where: str) -> str:
    if not isinstance(v, str):
        raise RequestError(f"{where} must be a string, got {_show(v)}")
    if len(v) > MAX_TEXT:
        raise RequestError(f"{where} is longer than {MAX_TEXT} characters")
    return v


def check_target(t, where: str = "target"):
    """None, "all", {"segments": "all" | [i, ...]} or {"layer": id}; returned unchanged."""
    if t is None or t == "all":
        return t
    d = _keys(t, where, {"segments", "layer"})
    if len(d) != 1:
        raise RequestError(f"{where} is {{'segments': 'all' or [indices]}} or {{'layer': id}}")
    if "layer" in d:
        integer(d["layer"], f"{where}.layer", 1, MAX_INDEX)
        return t
    segs = d["segments"]
    if segs != "all":
        if not isinstance(segs, list) or len(segs) > MAX_LIST:
            raise RequestError(f"{where}.segments must be 'all' or a list of at most {MAX_LIST} indices")
        for i in segs:
            integer(i, f"{where}.segments[]", 0, MAX_INDEX)
    return t


def check_edit(d, where: str = "edit") -> dict:
    """An edit: {"kind": "direction", "direction": ID, "layers": [lo, hi] | null, "strength": s, "target": T}
    or {"kind": "style", "layer": NAME | index, "channel": c, "strength": s, "target": T}."""
    if not isinstance(d, dict):
        raise RequestError(f"{where} must be a JSON object, got {_show(d)}")
    kind = d.get("kind")
    if kind == "direction":
        _keys(d, where, {"kind", "strength", "target", "direction", "layers"}, ("strength", "direction"))
        text(d["direction"], f"{where}.direction")
        layers = d.get("layers")
        if layers is not None:
            if not isinstance(layers, list) or len(layers) != 2:
                raise RequestError(f"{where}.layers must be null or [first, end], got {_show(layers)}")
            for v in layers:
                integer(v, f"{where}.layers[]", -MAX_INDEX, MAX_INDEX)
    elif kind == "style":
        _keys(d, where, {"kind", "strength", "target", "layer", "channel"}, ("strength", "layer", "channel"))
        if isinstance(d["layer"], int) and not isinstance(d["layer"], bool):
            integer(d["layer"], f"{where}.layer", 0, MAX_INDEX)
        else:
            text(d["layer"], f"{where}.layer")
        integer(d["channel"], f"{where}.channel", 0, MAX_INDEX)
    else:
        raise RequestError(f"{where}.kind must be 'direction' or 'style', got {_show(kind)}")
    number(d["strength"], f"{where}.strength", -MAX_STRENGTH, MAX_STRENGTH)
    check_target(d.get("target"), f"{where}.target")
    return d


def check_steps(v, where: str = "steps"):
    return None if v is None else integer(v, where, 1, MAX_STEPS)


# ------------------------------------------------------------------------------------------ bodies
def edit_body(body: dict) -> dict:
    """POST /api/preview and /api/edits: {"edit": EDIT}."""
    return check_edit(_keys(body, "the body", {"edit"}, ("edit",))["edit"])


def blend_body(body: dict) -> str:
    """POST /api/blend: {"blend": "mask" | "poisson"}."""
    blend = _keys(body, "the body", {"blend"}, ("blend",))["blend"]
    if blend not in ("mask", "poisson"):
        raise RequestError(f"blend must be 'mask' or 'poisson', got {_show(blend)}")
    return blend


def task_body(body: dict) -> dict:
    """POST /api/task/KIND: {"region": PNG data URL or base64, "steps": n | null, "target": T}."""
    _keys(body, "the body", {"region", "steps", "target"}, ("region",))
    if not isinstance(body["region"], str):
        raise RequestError(f"region must be a PNG data URL or base64 text, got {_show(body['region'])}")
    check_steps(body.get("steps"))
    check_target(body.get("target"))
    return body


def export_body(body: dict):
    """POST /api/export: {"name": stem | null}."""
    name = _keys(body, "the body", {"name"}).get("name")
    return None if name is None else text(name, "name")


def labels_body(body: dict) -> dict:
    """POST /api/labelled: {"labels": [[seed, 0 | 1], ...], "name": stem | null, "save": bool | null}."""
    _keys(body, "the body", {"labels", "name", "save"}, ("labels",))
    labels = body["labels"]
    if not isinstance(labels, list) or len(labels) > MAX_LIST:
        raise RequestError(f"labels must be a list of at most {MAX_LIST} [seed, label] pairs")
    for i, pair in enumerate(labels):
        if not isinstance(pair, list) or len(pair) != 2:
            raise RequestError(f"labels[{i}] must be [seed, label], got {_show(pair)}")
        integer(pair[0], f"labels[{i}] seed", 0, 2**32 - 1)
        integer(pair[1], f"labels[{i}] label", 0, 1)
    if body.get("save") not in (None, True, False):
        raise RequestError(f"save must be true or false, got {_show(body['save'])}")
    name = body.get("name")
    return {"labels": labels, "name": None if name is None else text(name, "name"), "save": bool(body.get("save"))}


def localized_body(body: dict) -> dict:
    """POST /api/localized: {"segment": i} or {"region": PNG data URL or base64}, and "top": n | null."""
    _keys(body, "the body", {"segment", "region", "top"})
    if ("segment" in body) == ("region" in body):
        raise RequestError("give the region as a segment index (segment) or a painted mask (region), one of them")
    if "segment" in body:
        integer(body["segment"], "segment", 0, MAX_INDEX)
    elif not isinstance(body["region"], str):
        raise RequestError(f"region must be a PNG data URL or base64 text, got {_show(body['region'])}")
    top = 8 if body.get("top") is None else integer(body["top"], "top", 1, 64)
    return {"segment": body.get("segment"), "region": body.get("region"), "top": top}


def empty_body(body: dict) -> None:
    """POST /api/undo, /api/redo, /api/cancel: no body, or {}."""
    _keys(body, "the body", set())
