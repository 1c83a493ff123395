"""Strict JSON for the engine's own files: what ``json`` accepts but a data file must not hold is refused.

``parse_json(raw, source)`` reads UTF-8 (a byte-order mark is allowed) and refuses, with an
``AcdcError`` naming ``source`` and the line and column: invalid JSON, bytes that are not UTF-8,
``NaN`` / ``Infinity`` (not JSON, and not writable back with ``allow_nan=False``), numbers beyond the
64-bit float range (``1e999`` would read as inf), integers too long for Python to convert, a key
given twice in one object (``json`` silently keeps the last), and nesting deeper than the parser.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
from typing import Any

from acdc_engine.errors import AcdcError


class _Rejected(Exception):
    """Raised by the strict parser's hooks: text that ``json`` accepts but a data file must not hold."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected(f"duplicate key '{key}' in one object")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {text[:40]} is out of range for a 64-bit float")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # longer than Python's integer-conversion limit
        raise _Rejected(f"integer of {len(text)} digits is too long") from None


_STRICT = {"object_pairs_hook": _unique_keys, "parse_constant": _no_constant, "parse_float": _finite_float, "parse_int": _bounded_int}


class _LocatingDecoder(json.JSONDecoder):
    """The strict parser on ``json``'s pure-Python scanner, remembering where the value it is
    reading starts; used only to say where a rejected value lies (the C scanner keeps no positions)."""

    def __init__(self) -> None:
        super().__init__(**_STRICT)
        self.position = 0
        self.parse_object = self._object
        self.parse_array = self._array
        scan = json.scanner.py_make_scanner(self)
        self.scan_once = self._tracking(scan)

    def _tracking(self, scan):
        def scan_at(text: str, index: int):
            self.position = index
            return scan(text, index)

        return scan_at

    def _object(self, s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        start = s_and_end[1] - 1

        def hook_at_start(pairs):
            self.position = start  # the hook runs once the object is read: point back at its '{'
            return object_pairs_hook(pairs)

        return json.decoder.JSONObject(s_and_end, strict, self._tracking(scan_once), object_hook, hook_at_start, memo)

    def _array(self, s_and_end, scan_once):
        return json.decoder.JSONArray(s_and_end, self._tracking(scan_once))


def _line_and_column(text: str | bytes, offset: int) -> tuple[int, int]:
    newline = "\n" if isinstance(text, str) else b"\n"
    line_start = text.rfind(newline, 0, offset) + 1
    return text.count(newline, 0, offset) + 1, offset - line_start + 1


def parse_json(raw: bytes | str, source: str = "circuit") -> Any:
    """Parse strict JSON: UTF-8 (a byte-order mark is allowed), no NaN or Infinity, no number
    outside the 64-bit float range, no key twice in one object. AcdcError names ``source`` and
    the line and column of the problem."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line, column = _line_and_column(raw, error.start)
            raise AcdcError(f"{source}: line {line}, column {column}: bytes that are not UTF-8 text") from None
    try:
        return json.loads(raw, **_STRICT)
    except json.JSONDecodeError as error:
        raise AcdcError(f"{source}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise AcdcError(f"{source}: JSON nested too deeply") from None
    except _Rejected as problem:
        decoder = _LocatingDecoder()
        try:
            decoder.decode(raw)
        except (_Rejected, RecursionError):
            pass
        line, column = _line_and_column(raw, decoder.position)
        raise AcdcError(f"{source}: line {line}, column {column}: {problem}") from None
