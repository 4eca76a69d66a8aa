"""Reading input files, streamed: gzip, BOM, format detection, JSON documents and JSON Lines, limits.

The stdlib decoder's `raw_decode` reads one array element at a time from a sliding text buffer, so
memory stays flat however large the file is. It is used instead of a streaming parser such as
ijson's yajl backend because that one turns lone surrogates into `?` and fails a whole file on a
number outside the double range, where the spec wants those records rejected one by one.
"""
import codecs
import gzip
import json
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import orjson

from ..formatting import human_bytes

CHUNK = 1 << 20
LOW_WATER = 1 << 16
MAX_RECORD_BYTES = 16 << 20  # one record (an array element or a JSON line) may be at most this long
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
_JSON_START = frozenset(b'{["-0123456789tfn')
_WORDS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}
# A string, or a non-JSON constant outside strings: finds where a NaN / Infinity literal is.
_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(NaN|-?Infinity)', re.DOTALL)
_WS = re.compile(r"[ \t\n\r]*")
_WS_BYTES = b" \t\n\r"


class InputError(Exception):
    """The file cannot be read as Sluice input; the message says why and where."""


class TooLarge(InputError):
    """The file is over a configured size limit."""


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
MALFORMED = object()


@dataclass(slots=True)
class Item:
    """One record as read: its 1-based position, its line (JSON Lines), and the parsed value."""

    pos: int
    line: int | None
    value: object  # the parsed JSON value, or MALFORMED
    text: str | None = None  # a malformed line's text


def sniff(head: bytes) -> str | None:
    """Return why the first bytes of an upload cannot start JSON, JSON Lines or gzip, or None."""
    if head.startswith(GZIP_MAGIC):
        return None
    if head.startswith(BOM):
        head = head[len(BOM):]
    body = head.lstrip(_WS_BYTES)
    if not body:
        return None  # empty, or only white space so far: an empty file is a valid, empty input
    word = _WORDS.get(body[0], b"")
    if body[0] not in _JSON_START or not word.startswith(body[:len(word)]):
        return f"the file does not start like JSON, JSON Lines or gzip (first byte {body[:1]!r})"
    return None


class _Limited:
    """A binary stream that counts what it yields and refuses to go past a limit."""

    def __init__(self, stream: BinaryIO, limit: int, what: str):
        self.stream, self.limit, self.what, self.count = stream, limit, what, 0

    def read(self, n: int) -> bytes:
        try:
            data = self.stream.read(n)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"the gzip stream is corrupt or truncated ({exc})") from None
        self.count += len(data)
        if self.count > self.limit:
            raise TooLarge(f"the file is larger than the {self.what} limit of {human_bytes(self.limit)}")
        return data


class Reader:
    """Iterate the records of one input file; `bytes_read` tells how far into the file it is."""

    def __init__(self, raw: BinaryIO, max_decompressed: int, max_bytes: int | None = None):
        self.raw = raw
        head = raw.read(2)
        raw.seek(0)
        stream = raw
        if max_bytes is not None:
            stream = _Limited(raw, max_bytes, "upload size")
        if head == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        self.stream = _Limited(stream, max_decompressed, "decompressed size")
        self.format = None

    def bytes_read(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far."""
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[Item]:
        head = self.stream.read(CHUNK)
        if head.startswith(BOM):
            head = head[len(BOM):]
        while head and not head.strip(_WS_BYTES):
            more = self.stream.read(CHUNK)  # only white space so far: read on
            if not more:
                break
            head += more
        problem = sniff(head)
        if problem:
            raise InputError(problem)
        if not head.strip(_WS_BYTES):
            self.format = "empty"
            return iter(())
        is_lines, head = self._is_json_lines(head)
        self.format = "jsonl" if is_lines else "json"
        return self._json_lines(head) if is_lines else self._document(head)

    def _is_json_lines(self, head: bytes) -> tuple[bool, bytes]:
        """JSON Lines: the first non-blank line is a whole JSON value and more non-blank lines follow."""
        start = len(head) - len(head.lstrip(_WS_BYTES))
        start = head.rfind(b"\n", 0, start) + 1
        end = head.find(b"\n", start)
        while end < 0 and len(head) - start <= MAX_RECORD_BYTES:
            more = self.stream.read(CHUNK)
            if not more:
                return False, head  # a single line: a document
            head += more
            end = head.find(b"\n", start)
        if end < 0 or _parse_line(head[start:end]) is MALFORMED:
            return False, head
        while not head[end + 1:].strip(_WS_BYTES):
            more = self.stream.read(CHUNK)
            if not more:
                return False, head
            head += more
        return True, head

    # -- JSON Lines ---------------------------------------------------------------------------

    def _json_lines(self, head: bytes) -> Iterator[Item]:
        buf = head
        line_no = pos = 0
        while True:
            more = self.stream.read(CHUNK)
            lines = buf.split(b"\n")
            buf = lines.pop()
            if len(buf) > MAX_RECORD_BYTES:
                raise InputError(f"line {line_no + len(lines) + 1} is longer than the record limit "
                                 f"of {human_bytes(MAX_RECORD_BYTES)}")
            for line in lines:
                line_no += 1
                if not line.strip(_WS_BYTES):
                    continue
                pos += 1
                value = _parse_line(line)
                if value is MALFORMED:
                    yield Item(pos, line_no, MALFORMED, _line_text(line.rstrip(b"\r")))
                else:
                    yield Item(pos, line_no, value)
            if not more:
                break
            buf += more
        if buf.strip(_WS_BYTES):
            line_no += 1
            value = _parse_line(buf)
            yield Item(pos + 1, line_no, value,
                       _line_text(buf.rstrip(b"\r")) if value is MALFORMED else None)

    # -- one JSON document --------------------------------------------------------------------

    def _document(self, head: bytes) -> Iterator[Item]:
        text = _TextBuffer(self.stream, head)
        pos = text.skip_ws(0)
        if text.buf[pos] != "[":
            value, end = text.decode(pos)
            text.expect_end(text.skip_ws(end))
            yield Item(1, None, value)
            return
        pos = text.skip_ws(pos + 1)
        if text.buf[pos:pos + 1] == "]":
            text.expect_end(text.skip_ws(pos + 1))
            return
        index = 0
        scan = _DECODER.scan_once
        buf = text.buf
        while True:
            if len(buf) - pos < LOW_WATER and not text.eof:
                pos = text._more(pos)
                buf = text.buf
            try:
                value, pos = scan(buf, pos)
            except (StopIteration, ValueError, RecursionError):
                value, pos = text.decode(pos)  # reads on, or raises the located error
                buf = text.buf
            index += 1
            yield Item(index, None, value)
            sep = buf[pos:pos + 1]
            if sep not in (",", "]"):
                pos = text.skip_ws(pos)
                buf = text.buf
                sep = buf[pos:pos + 1]
            if sep == ",":
                pos += 1
                if pos >= len(buf) or buf[pos] in " \t\n\r":
                    pos = text.skip_ws(pos)
                    buf = text.buf
            elif sep == "]":
                text.expect_end(text.skip_ws(pos + 1))
                return
            else:
                raise text.error("expected ',' or ']' after an array element", pos)


def _line_text(line: bytes) -> str:
    """A malformed line as text to keep: bad UTF-8 as \\xNN, NUL as \\u0000 (PostgreSQL text refuses NUL)."""
    return line.decode("utf-8", "backslashreplace").replace("\x00", "\\u0000")


def _parse_line(line: bytes):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses lone surrogates and numbers beyond the double range; the stdlib reads them,
    # so that such a record is rejected by the validation rules instead of being malformed.
    try:
        return _DECODER.decode(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return MALFORMED


class _TextBuffer:
    """Decoded text in a sliding window, with the line and column of any place in it."""

    def __init__(self, stream, head: bytes):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_in = 0
        self.eof = False
        self.lines_before = 0  # newlines in the text already dropped from the window
        self.col_before = 0  # characters after the last dropped newline
        self.buf = ""
        self._feed(head)

    def _feed(self, data: bytes) -> None:
        final = not data
        try:
            self.buf += self.decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InputError(f"the file is not valid UTF-8 (byte offset {self.bytes_in + exc.start})") from None
        self.bytes_in += len(data)
        self.eof = final

    def _more(self, pos: int) -> int:
        """Drop the text before `pos`, read another chunk; return where `pos` now is."""
        dropped = self.buf[:pos]
        newlines = dropped.count("\n")
        if newlines:
            self.lines_before += newlines
            self.col_before = len(dropped) - dropped.rfind("\n") - 1
        else:
            self.col_before += len(dropped)
        self.buf = self.buf[pos:]
        self._feed(self.stream.read(CHUNK))
        return 0

    def ensure(self, pos: int) -> int:
        """Make sure a comfortable amount of text follows `pos` unless the file ends first."""
        if len(self.buf) - pos < LOW_WATER and not self.eof:
            return self._more(pos)
        return pos

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.buf, pos).end()
            if pos < len(self.buf) or self.eof:
                return pos
            pos = self._more(pos)

    def decode(self, pos: int):
        """Decode one JSON value at `pos`, reading more text when it runs past the window."""
        while True:
            try:
                return _DECODER.raw_decode(self.buf, pos)
            except json.JSONDecodeError as exc:
                if self.eof or len(self.buf) - pos > MAX_RECORD_BYTES:
                    raise self.error(exc.msg, exc.pos) from None
                pos = self._more(pos)
            except ValueError as exc:  # NaN / Infinity: point at the literal, not at the record
                where = next((m.start(1) for m in _CONSTANT.finditer(self.buf, pos) if m.group(1)), pos)
                raise self.error(str(exc), where) from None
            except RecursionError:
                raise self.error("the value is nested too deeply", pos) from None

    def expect_end(self, pos: int) -> None:
        if pos < len(self.buf):
            raise self.error("unexpected data after the JSON document", pos)

    def error(self, msg: str, pos: int) -> InputError:
        before = self.buf[:pos]
        newlines = before.count("\n")
        line = self.lines_before + newlines + 1
        column = (pos - before.rfind("\n")) if newlines else (self.col_before + pos + 1)
        return InputError(f"invalid JSON at line {line}, column {column}: {msg}")
