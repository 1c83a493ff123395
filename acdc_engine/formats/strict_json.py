"""Strict JSON for the engine's own files: what ``json`` accepts but a data file must not hold is refused.

``parse_json(raw, source)`` reads UTF-8 (a byte-order mark is allowed) and refuses, with an
``AcdcError`` naming ``source`` and the line and column: invalid JSON, bytes that are not UTF-8,
``NaN`` / ``Infinity`` (not JSON, and not writable back with ``allow_nan=False``), numbers beyond the
64-bit float range (``1e999`` would read as inf), integers too long for Python to convert, a key
given twice in one object (``json`` silently keeps the last; the error points at the second
occurrence of the key), and nesting deeper than the parser. ``strict_loads(text)`` is the same
parser for one piece of text (a JSON-lines record): it raises ``JsonProblem``, which holds the
problem and its line and column, for the caller to place.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import re
from typing import Any

from acdc_engine.core.errors import AcdcError


class JsonProblem(AcdcError):
    """Text refused by the strict parser: ``problem`` at ``line`` and ``column`` (1-based; both
    None when no single place is to blame, as for nesting beyond the parser)."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(problem if line is None else f"line {line}, column {column}: {problem}")
        self.problem, self.line, self.column = problem, line, column


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
        return json.decoder.JSONObject(s_and_end, strict, self._tracking(scan_once), object_hook, object_pairs_hook, memo)

    def _array(self, s_and_end, scan_once):
        return json.decoder.JSONArray(s_and_end, self._tracking(scan_once))


def _line_and_column(text: str | bytes, offset: int) -> tuple[int, int]:
    newline = "\n" if isinstance(text, str) else b"\n"
    line_start = text.rfind(newline, 0, offset) + 1
    return text.count(newline, 0, offset) + 1, offset - line_start + 1


# The tokens of (syntactically valid) JSON text: strings, structural characters, other literals.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def _first_duplicate_key(text: str) -> tuple[str, int] | None:
    """The first key, in reading order, that repeats an earlier key of its object, and the offset of
    its opening quote; None if no object repeats a key. ``text`` must be valid JSON."""
    objects: list[set[str] | None] = []  # per open container: the keys of an object so far, None for an array
    string = None  # the string token just read, with its offset
    for token in _TOKEN.finditer(text):
        value = token.group()
        if value == ":" and string is not None:  # a key
            keys = objects[-1]
            if string[0] in keys:
                return string
            keys.add(string[0])
        elif value in "{[":
            objects.append(set() if value == "{" else None)
        elif value in "}]":
            objects.pop()
        string = (json.loads(value), token.start()) if value.startswith('"') else None
    return None


def strict_loads(raw: bytes | str) -> Any:
    """Parse strict JSON (see the module docstring); ``JsonProblem`` saying what and where if refused."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise JsonProblem("bytes that are not UTF-8 text", *_line_and_column(raw, error.start)) from None
    try:
        return json.loads(raw, **_STRICT)
    except json.JSONDecodeError as error:
        raise JsonProblem(f"not valid JSON: {error.msg}", error.lineno, error.colno) from None
    except RecursionError:
        raise JsonProblem("JSON nested too deeply") from None
    except _Rejected as rejected:
        problem = str(rejected)
    duplicate = _first_duplicate_key(raw)
    if duplicate is not None:
        key, offset = duplicate
        raise JsonProblem(f"duplicate key '{key}' in one object", *_line_and_column(raw, offset))
    decoder = _LocatingDecoder()  # a number or constant refused: find where the parser met it
    try:
        decoder.decode(raw)
    except (_Rejected, RecursionError):
        pass
    raise JsonProblem(problem, *_line_and_column(raw, decoder.position))


def parse_json(raw: bytes | str, source: str = "circuit") -> Any:
    """Parse strict JSON: UTF-8 (a byte-order mark is allowed), no NaN or Infinity, no number
    outside the 64-bit float range, no key twice in one object. AcdcError names ``source`` and
    the line and column of the problem."""
    try:
        return strict_loads(raw)
    except JsonProblem as error:
        if error.line is None:
            raise AcdcError(f"{source}: {error.problem}") from None
        if error.problem.startswith("not valid JSON: "):
            detail = error.problem.removeprefix("not valid JSON: ")
            raise AcdcError(f"{source}: not valid JSON at line {error.line}, column {error.column}: {detail}") from None
        raise AcdcError(f"{source}: {error}") from None
