"""Reading input files, streamed: gzip, BOM, format detection, JSON documents and JSON Lines, limits.

The stdlib's C scanner reads one array element at a time from a sliding text buffer, so memory
stays flat however large the file is; it is used instead of a streaming parser such as ijson's yajl
backend because that one turns lone surrogates into `?` and fails a whole file on a number outside
the double range, where the spec wants those records rejected one by one. White space is skipped a
chunk at a time (never gathered), and a record over the record limit is skipped through with regular
expressions that jump over strings and find its closing bracket, keeping only its first 64 KiB.
"""
import codecs
import gzip
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..formatting import human_bytes
from . import jsontext

CHUNK = 1 << 20
LOW_WATER = 1 << 16
MAX_RECORD_BYTES = 16 << 20  # one record (an array element or a JSON line) may be at most this long
KEEP = 64 << 10  # what a record_too_large dead letter keeps of its text
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
_JSON_START = frozenset(b'{["-0123456789tfn')
_WORDS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}
# A string, or a non-JSON constant outside strings: finds where a NaN / Infinity literal is.
_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(NaN|-?Infinity)', re.DOTALL)
_WS = re.compile(r"[ \t\n\r]*+")
_WS_BYTES = b" \t\n\r"
_WS_RUN = re.compile(rb"[ \t\n\r]*+")
# Skipping through a record without parsing it: text that holds no bracket and no unfinished string,
# the rest of a string, and a scalar at the top.
_SKIP = re.compile(r'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_STRING_REST = re.compile(r'(?:[^"\\]++|\\.)*+', re.DOTALL)
_SCALAR = re.compile(r"[^,\]} \t\n\r]*+")


class InputError(Exception):
    """The file cannot be read as Sluice input; the message says why and where."""


class TooLarge(InputError):
    """The file is over a configured size limit."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record that cannot be parsed: the error code and detail of its dead letter."""

    code: str
    detail: str


MALFORMED = Unreadable("malformed_json", "the line is not valid JSON")


def too_large(size: int, limit: int) -> Unreadable:
    """The dead letter's reason for a record of `size` bytes over the record limit."""
    exact = f" ({size:,} bytes)" if size >= 1024 else ""
    return Unreadable("record_too_large", f"the record is {human_bytes(size)}{exact}, "
                                          f"over the record limit of {human_bytes(limit)}")


@dataclass(slots=True)
class Item:
    """One record as read: its 1-based position, its line (JSON Lines), and the parsed value."""

    pos: int
    line: int | None
    value: object  # the parsed JSON value, or an Unreadable
    text: str | None = None  # an Unreadable record's text, kept as its raw


def sniff(head: bytes) -> str | None:
    """Return why the first bytes of an upload cannot start JSON, JSON Lines or gzip, or None."""
    if head.startswith(GZIP_MAGIC):
        return None
    head = head.removeprefix(BOM)
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
    """Iterate the records of one input file; `bytes_read` tells how far into the file it is.

    `max_record` is the record limit; `on_chunk()` is called after every chunk read (about 1 MiB),
    whatever the chunk holds, so that progress and cancel work through white space too. `records`
    is how many records have been read when it is called.
    """

    def __init__(self, raw: BinaryIO, max_decompressed: int, max_bytes: int | None = None, *,
                 max_record: int = MAX_RECORD_BYTES, on_chunk: Callable[[], None] | None = None):
        self.raw = raw
        head = raw.read(2)
        raw.seek(0)
        stream = raw
        if max_bytes is not None:
            stream = _Limited(raw, max_bytes, "upload size")
        if head == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        self.stream = _Limited(stream, max_decompressed, "decompressed size")
        self.max_record = max_record
        self.on_chunk = on_chunk
        self.format = None
        self.records = 0

    def bytes_read(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far."""
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def _read(self) -> bytes:
        data = self.stream.read(CHUNK)
        if self.on_chunk is not None:
            self.on_chunk()
        return data

    def __iter__(self) -> Iterator[Item]:
        head = self._read().removeprefix(BOM)
        lines = column = 0  # where the first non-blank byte is: newlines and columns before it
        while True:
            start = _WS_RUN.match(head).end()
            lines, column = _advance(head, start, lines, column)
            if start < len(head):
                head = head[start:]
                break
            head = self._read()  # only white space so far: drop it, read on
            if not head:
                self.format = "empty"
                return iter(())
        problem = sniff(head)
        if problem:
            raise InputError(problem)
        return self._detect(head, lines, column)

    def _detect(self, head: bytes, lines: int, column: int) -> Iterator[Item]:
        """JSON Lines: the first non-blank line is a whole JSON value and more non-blank lines follow.

        A first line longer than the record limit makes the file a document (a one-line array).
        """
        end = head.find(b"\n")
        while end < 0 and len(head) <= self.max_record:
            more = self._read()
            if not more:
                break  # a single line: a document
            head += more
            end = head.find(b"\n", len(head) - len(more))
        first = _parse_line(head[:end]) if 0 <= end <= self.max_record else MALFORMED
        if type(first) is Unreadable:
            self.format = "json"
            return self._document(head, lines, column)
        rest = head[end + 1:]
        skipped = 0  # newlines in the white space dropped after the first line
        while not rest.strip(_WS_BYTES):
            skipped += rest.count(b"\n")
            rest = self._read()
            if not rest:  # one value and white space: a document
                self.format = "json"
                return self._document(head[:end], lines, column)
        self.format = "jsonl"
        return self._json_lines(first, rest, lines + 1, skipped)

    # -- JSON Lines ---------------------------------------------------------------------------

    def _json_lines(self, first, buf: bytes, first_line: int, skipped: int) -> Iterator[Item]:
        limit = self.max_record
        yield Item(1, first_line, first)
        line_no, pos = first_line + skipped, 1  # line_no: the last line that ended before `buf`
        while True:
            cut = buf.rfind(b"\n")
            if cut >= 0:
                lines = buf[:cut]
                buf = buf[cut + 1:]
                if lines.count(b"\n") > len(lines) >> 5:  # mostly blank lines: jump over them
                    line_no, pos = yield from self._sparse_lines(lines, line_no, pos)
                else:
                    big = len(lines) > limit
                    for line in lines.split(b"\n"):
                        line_no += 1
                        if not line.strip(_WS_BYTES):
                            continue
                        pos += 1
                        if big and len(line) > limit:
                            yield self._line_item(line, pos, line_no)
                            continue
                        value = _parse_line(line)
                        if value is MALFORMED:
                            yield Item(pos, line_no, MALFORMED, _line_text(line.rstrip(b"\r")))
                        else:
                            yield Item(pos, line_no, value)
            if not buf.strip(_WS_BYTES):
                buf = b""  # a blank start of a line: nothing to keep, however long it grows
            elif len(buf) > limit and len(buf.strip(_WS_BYTES)) > limit:
                pos += 1
                line_no += 1
                item, buf = self._skip_line(buf.lstrip(_WS_BYTES), pos, line_no)
                yield item
                if buf is None:
                    return
                continue
            self.records = pos
            more = self._read()
            if not more:
                break
            buf += more
        if buf.strip(_WS_BYTES):
            yield self._line_item(buf, pos + 1, line_no + 1)

    def _sparse_lines(self, lines: bytes, line_no: int, pos: int):
        """The non-blank lines of `lines` (complete lines, mostly blank), found by jumping over white space."""
        n = len(lines)
        at = newlines = 0  # `at` starts a line; `newlines` is how many newlines lie before it
        while True:
            first = _WS_RUN.match(lines, at).end()
            if first >= n:
                break
            start = lines.rfind(b"\n", at, first) + 1 or at
            newlines += lines.count(b"\n", at, start)
            end = lines.find(b"\n", first)
            if end < 0:
                end = n
            pos += 1
            yield self._line_item(lines[start:end], pos, line_no + newlines + 1)
            newlines += 1
            at = end + 1
        return line_no + lines.count(b"\n") + 1, pos

    def _line_item(self, line: bytes, pos: int, line_no: int) -> Item:
        if len(line) > self.max_record:
            content = line.strip(_WS_BYTES)
            if len(content) > self.max_record:
                return Item(pos, line_no, too_large(len(content), self.max_record), _kept(content))
        value = _parse_line(line)
        if value is MALFORMED:
            return Item(pos, line_no, MALFORMED, _line_text(line.rstrip(b"\r")))
        return Item(pos, line_no, value)

    def _skip_line(self, start: bytes, pos: int, line_no: int) -> tuple[Item, bytes | None]:
        """Skip a line over the record limit, keeping its first 64 KiB; return it and what follows it."""
        blank_end = len(start) - len(start.rstrip(_WS_BYTES))  # white space at the end so far: not the record's
        kept, size, rest = start[:KEEP], len(start) - blank_end, None
        while True:
            self.records = pos - 1
            more = self._read()
            end = more.find(b"\n") if more else 0
            part = more if end < 0 else more[:end]
            if len(kept) < KEEP:
                kept += part[:KEEP]
            content = len(part.rstrip(_WS_BYTES))
            if content:
                size += blank_end + content
                blank_end = len(part) - content
            else:
                blank_end += len(part)
            if end >= 0:
                rest = more[end + 1:] if more else None  # None: the last line ended with the file
                break
        if size <= len(kept):
            kept = kept[:size]
        return Item(pos, line_no, too_large(size, self.max_record), _kept(kept)), rest

    # -- one JSON document --------------------------------------------------------------------

    def _document(self, head: bytes, lines: int, column: int) -> Iterator[Item]:
        text = _TextBuffer(self._read, head, lines, column)
        limit = self.max_record
        small = limit // 4  # a UTF-8 character is at most 4 bytes: shorter texts cannot be too large
        pos = text.skip_ws(0)
        if text.buf[pos] != "[":
            value, end, raw = text.element(pos, 1, limit)
            text.expect_end(text.skip_ws(end))
            yield Item(1, None, value, raw)
            return
        pos = text.skip_ws(pos + 1)
        if text.buf[pos:pos + 1] == "]":
            text.expect_end(text.skip_ws(pos + 1))
            return
        index = 0
        scan = jsontext.scan_once
        buf = text.buf
        while True:
            if len(buf) - pos < LOW_WATER and not text.eof:
                self.records = index
                pos = text.more(pos)
                buf = text.buf
            index += 1
            start = pos
            try:
                value, pos = scan(buf, pos)
            except (StopIteration, ValueError, RecursionError):  # deep, not JSON, or not all in the window
                self.records = index - 1
                value, pos, raw = text.element(start, index, limit)
                buf = text.buf
                yield Item(index, None, value, raw)
            else:
                if pos - start > small and _utf8_len(buf, start, pos) > limit:
                    yield Item(index, None, too_large(_utf8_len(buf, start, pos), limit),
                               _kept(buf[start:min(pos, start + KEEP)].encode()))
                else:
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


def _advance(data: bytes, end: int, lines: int, column: int) -> tuple[int, int]:
    """Lines and column after `data[:end]`, starting from `lines` and `column`."""
    newlines = data.count(b"\n", 0, end)
    if newlines:
        return lines + newlines, end - data.rfind(b"\n", 0, end) - 1
    return lines, column + end


def _utf8_len(text: str, start: int, end: int) -> int:
    """Bytes of `text[start:end]` in UTF-8 (without encoding it when the text is ASCII)."""
    return end - start if text.isascii() else len(text[start:end].encode())


def _line_text(line: bytes) -> str:
    """A malformed line as text to keep: bad UTF-8 as \\xNN, NUL as \\u0000 (PostgreSQL text refuses NUL)."""
    return line.decode("utf-8", "backslashreplace").replace("\x00", "\\u0000")


def _kept(data: bytes) -> str:
    """The first 64 KiB of a record's text, cut at a character boundary, kept like a malformed line."""
    data = data[:KEEP]
    if len(data) == KEEP:
        i = len(data) - 1
        while i > len(data) - 4 and 0x80 <= data[i] < 0xC0:
            i -= 1  # continuation bytes: find where the last character starts
        need = 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
        if data[i] >= 0xC0 and len(data) - i < need:
            data = data[:i]
    return _line_text(data)


def _parse_line(line: bytes):
    try:
        return jsontext.loads_bytes(line)
    except (ValueError, UnicodeDecodeError):
        return MALFORMED


class _TextBuffer:
    """Decoded text in a sliding window, with the line and column of any place in it."""

    def __init__(self, read: Callable[[], bytes], head: bytes, lines_before: int = 0, col_before: int = 0):
        self.read = read
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_in = 0
        self.eof = False
        self.lines_before = lines_before  # newlines in the text already dropped from the window
        self.col_before = col_before  # characters after the last dropped newline
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

    def more(self, pos: int) -> int:
        """Drop the text before `pos`, read another chunk; return where `pos` now is."""
        newlines = self.buf.count("\n", 0, pos)
        if newlines:
            self.lines_before += newlines
            self.col_before = pos - self.buf.rfind("\n", 0, pos) - 1
        else:
            self.col_before += pos
        self.buf = self.buf[pos:]
        self._feed(self.read())
        return 0

    def offset(self, pos: int) -> int:
        """Byte offset in the (decompressed) text of `pos`; for measuring a record, not on the fast path."""
        return self.bytes_in - len(self.decoder.getstate()[0]) - _utf8_len(self.buf, pos, len(self.buf))

    def skip_ws(self, pos: int) -> int:
        while True:
            pos = _WS.match(self.buf, pos).end()
            if pos < len(self.buf) or self.eof:
                return pos
            pos = self.more(pos)

    def element(self, pos: int, index: int, limit: int):
        """Read the record at `pos` whatever its depth or size; return (value, end, raw text or None).

        A record over `limit` is skipped through (only its first 64 KiB kept) and returned as an
        Unreadable `record_too_large`; a record that is not JSON raises the located error.
        """
        if pos >= len(self.buf):  # the file ended where a record was due ("[", "[1,")
            raise self.error("Expecting value (the file ends here)", pos)
        try:
            value, end = jsontext.decode_at(self.buf, pos)
            if end == len(self.buf) and not self.eof:
                raise ValueError("a number may go on in the next chunk")
        except ValueError:
            pass  # not JSON, or not all of it in the window yet: find its end first
        else:
            size = _utf8_len(self.buf, pos, end) if end - pos > limit // 4 else 0
            if size > limit:
                return too_large(size, limit), end, _kept(self.buf[pos:min(end, pos + KEEP)].encode())
            return value, end, None
        pos, end = self._find_end(pos, limit)
        if end is None:  # over the limit: skip through it
            start = self.offset(pos)
            end, head = self._skip_through(pos, index, limit)
            size = self.offset(end) - start
            return too_large(size, limit), end, _kept(head.encode()[:size])
        size = _utf8_len(self.buf, pos, end) if end - pos > limit // 4 else 0
        if size > limit:  # all of it is in the window, invalid or not: too large is what it is
            return too_large(size, limit), end, _kept(self.buf[pos:min(end, pos + KEEP)].encode())
        try:
            value, end = jsontext.decode_at(self.buf, pos)
        except jsontext.JSONDecodeError as exc:
            raise self.error(exc.msg, exc.pos) from None
        except ValueError as exc:  # NaN / Infinity: point at the literal, not at the record
            where = next((m.start(1) for m in _CONSTANT.finditer(self.buf, pos) if m.group(1)), pos)
            raise self.error(str(exc), where) from None
        return value, end, None

    def _find_end(self, pos: int, limit: int) -> tuple[int, int | None]:
        """Read until the record at `pos` ends, keeping it in the window; return (pos, end).

        `end` is None when the record grows past the limit first; at the end of the file it is the
        end of the text (the decoder then says what is wrong).
        """
        scanner = _Scanner(self.buf[pos])
        at = pos
        while True:
            end = scanner.run(self.buf, at)
            if end is not None:
                return pos, end
            if self._over(pos, limit):
                return pos, None
            if self.eof:
                return pos, len(self.buf)
            resume = len(self.buf) - scanner.back - pos  # where the scanner goes on, once `pos` is 0
            pos = self.more(pos)
            at = resume

    def _over(self, pos: int, limit: int) -> bool:
        chars = len(self.buf) - pos
        return chars > limit or (chars > limit // 4 and _utf8_len(self.buf, pos, len(self.buf)) > limit)

    def _skip_through(self, pos: int, index: int, limit: int) -> tuple[int, str]:
        """Skip to the end of a record over the limit, dropping its text as it goes.

        Return its end and its first 64 KiB of text (or more: the caller cuts it at the record's size).
        """
        scanner = _Scanner(self.buf[pos])
        at = pos
        head = self.buf[pos:pos + KEEP]
        while True:
            end = scanner.run(self.buf, at)
            if end is not None:
                return end, head
            if self.eof:
                raise InputError(f"record {index} is larger than the record limit of {human_bytes(limit)} "
                                 "and its end was not found")
            at = self.more(len(self.buf) - scanner.back)  # the unfinished escape stays, at the start
            if len(head) < KEEP:
                head += self.buf[scanner.back:scanner.back + KEEP]

    def expect_end(self, pos: int) -> None:
        if pos < len(self.buf):
            raise self.error("unexpected data after the JSON document", pos)

    def error(self, msg: str, pos: int) -> InputError:
        before = self.buf[:pos]
        newlines = before.count("\n")
        line = self.lines_before + newlines + 1
        column = (pos - before.rfind("\n")) if newlines else (self.col_before + pos + 1)
        return InputError(f"invalid JSON at line {line}, column {column}: {msg}")


class _Scanner:
    """Finds where a JSON value ends without parsing it: strings jumped over, brackets counted.

    `run` resumes where the last call stopped; `back` is how many characters at the end of the text
    it has not consumed yet (an escape cut by the end of the window).
    """

    def __init__(self, first: str):
        self.scalar = first not in '[{"'
        self.opening_quote = first == '"'
        self.in_string = False
        self.depth = 0
        self.back = 0

    def run(self, text: str, at: int) -> int | None:
        """Return the end of the value, or None when it goes past the end of `text`."""
        n = len(text)
        self.back = 0
        if self.opening_quote:  # a string at the top: it ends with its closing quote
            self.opening_quote, self.in_string = False, True
            at += 1
        if self.scalar:
            at = _SCALAR.match(text, at).end()
            return at if at < n else None
        while True:
            if self.in_string:
                at = _STRING_REST.match(text, at).end()
                if at >= n:
                    return None
                if text[at] == "\\":  # a backslash at the very end: its escape is in the next chunk
                    self.back = n - at
                    return None
                self.in_string = False
                at += 1
                if self.depth == 0:
                    return at
            at = _SKIP.match(text, at).end()
            if at >= n:
                return None
            c = text[at]
            at += 1
            if c == '"':
                self.in_string = True
            elif c in "[{":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    return at
