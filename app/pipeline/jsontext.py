"""JSON text of records: parsing and serialising at any depth, RFC 8259 (no NaN / Infinity literals).

The fast paths are orjson and the stdlib's C scanner. Both give up on deep values (orjson at 255
levels, the C scanner with RecursionError near the interpreter's recursion limit), so each falls
back, for that one value only, to a parser and a serialiser here that keep their own stack instead
of recursing: a record 10,000 levels deep is read, validated and kept like any other.
"""
import json
import math
import re
from json.decoder import JSONDecodeError
from json.encoder import encode_basestring

import orjson

__all__ = ["JSONDecodeError", "decode_at", "dumps", "escape_text", "loads", "loads_bytes", "scan_once"]


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The C scanner: (value, end) of the JSON value at a position; StopIteration when none starts
# there, ValueError when it is not JSON, RecursionError when it is too deep for it.
scan_once = _DECODER.scan_once
_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_END = object()


def decode_at(text: str, pos: int):
    """Decode the JSON value that starts exactly at `pos`; return (value, end).

    Raises JSONDecodeError (with its position) for invalid JSON, ValueError for a NaN / Infinity literal.
    """
    try:
        return scan_once(text, pos)
    except StopIteration as exc:
        raise JSONDecodeError("Expecting value", text, exc.value) from None
    except RecursionError:
        return _decode_deep(text, pos)


def loads(text: str):
    """Parse a whole JSON text (white space around it allowed); raise ValueError when it is not JSON."""
    pos = _WS.match(text, 0).end()
    value, end = decode_at(text, pos)
    end = _WS.match(text, end).end()
    if end != len(text):
        raise JSONDecodeError("Extra data", text, end)
    return value


def loads_bytes(data: bytes):
    """Parse UTF-8 JSON bytes (one JSON Lines line); raise ValueError when they are not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses lone surrogates, numbers beyond the double range and more than 255 levels; the
    # stdlib reads them, so that such a record is rejected by the validation rules, not malformed.
    return loads(data.decode("utf-8"))


def _decode_deep(s: str, idx: int):
    """The iterative parser: containers on an explicit stack, scalars by the C scanner."""
    ws = _WS.match
    stack = []  # [container, key]: key is None for a list
    while True:
        c = s[idx:idx + 1]
        if c == "{":
            idx = ws(s, idx + 1).end()
            if s[idx:idx + 1] == "}":
                value, idx = {}, idx + 1
            else:
                key, idx = _key(s, idx)
                stack.append([{}, key])
                continue
        elif c == "[":
            idx = ws(s, idx + 1).end()
            if s[idx:idx + 1] == "]":
                value, idx = [], idx + 1
            else:
                stack.append([[], None])
                continue
        else:
            try:
                value, idx = scan_once(s, idx)  # a string, number or literal: no recursion
            except StopIteration as exc:
                raise JSONDecodeError("Expecting value", s, exc.value) from None
        while True:  # put the value into its container; close every container that ends here
            if not stack:
                return value, idx
            top = stack[-1]
            container = top[0]
            is_list = top[1] is None
            if is_list:
                container.append(value)
            else:
                container[top[1]] = value
            idx = ws(s, idx).end()
            c = s[idx:idx + 1]
            if c == ",":
                idx = ws(s, idx + 1).end()
                if not is_list:
                    top[1], idx = _key(s, idx)
                break
            if c == ("]" if is_list else "}"):
                stack.pop()
                value, idx = container, idx + 1
                continue
            raise JSONDecodeError("Expecting ',' delimiter", s, idx)


def _key(s: str, idx: int) -> tuple[str, int]:
    """An object's key and its colon, at `idx`; return (key, the index after the colon)."""
    if s[idx:idx + 1] != '"':
        raise JSONDecodeError("Expecting property name enclosed in double quotes", s, idx)
    key, idx = json.decoder.scanstring(s, idx + 1)
    idx = _WS.match(s, idx).end()
    if s[idx:idx + 1] != ":":
        raise JSONDecodeError("Expecting ':' delimiter", s, idx)
    return key, _WS.match(s, idx + 1).end()


def dumps(value) -> str:
    """The value as compact JSON text, keys in their order; NUL and unpaired surrogates escaped.

    A non-finite float (from a literal such as 1e400) is written as 1e999, not as `Infinity`.
    """
    try:
        text = orjson.dumps(value)
        if b"null" not in text:  # orjson writes an infinite float as null: the path below keeps it
            return text.decode()
    except (TypeError, orjson.JSONEncodeError):
        pass
    # Lone surrogates, huge integers, infinite floats, nulls, or deeper than orjson goes.
    return escape_text("".join(_dump_parts(value)))


def escape_text(text: str) -> str:
    """Text with its unpaired surrogates written as \\uXXXX escapes (they cannot be stored as UTF-8)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _scalar(v) -> str:
    if isinstance(v, str):
        return encode_basestring(v)  # escapes '"', '\\' and control characters, NUL included
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        if math.isinf(v):
            return "1e999" if v > 0 else "-1e999"
        return float.__repr__(v)
    if isinstance(v, int):
        return int.__repr__(v)
    raise TypeError(f"{type(v).__name__} is not JSON")


def _dump_parts(value):
    """Yield the JSON text of `value` in pieces, keeping the open containers on a stack."""
    stack = []  # [iterator, is_dict, first]
    while True:
        if isinstance(value, dict):
            yield "{"
            stack.append([iter(value.items()), True, True])
        elif isinstance(value, list):
            yield "["
            stack.append([iter(value), False, True])
        else:
            yield _scalar(value)
        while stack:
            top = stack[-1]
            item = next(top[0], _END)
            if item is _END:
                yield "}" if top[1] else "]"
                stack.pop()
                continue
            if not top[2]:
                yield ","
            top[2] = False
            if top[1]:
                key, value = item
                yield encode_basestring(key)
                yield ":"
            else:
                value = item
            break
        else:
            return
