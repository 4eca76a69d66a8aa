"""The reader's limits (SPEC §1): white space read a chunk at a time, progress and cancel through it, and
records over the record limit kept as `record_too_large` dead letters while the rest of the file loads."""

import gzip
import io
import json
import tracemalloc

import pytest

from app.pipeline import RunCancelled, RunFailed, Settings, reprocess, run_file
from app.pipeline.extract import CHUNK, Reader

from .pipeline_helpers import fetch, rec, target

MiB = 1 << 20
SMALL = Settings(max_record_bytes=4096)  # a small record limit keeps these tests fast
WS = b" \t\r\n" * (MiB // 4)  # 1 MiB of every kind of JSON white space
GOOD = [rec(key=f"k{i}", ts=f"2025-01-15T12:00:0{i}") for i in range(3)]


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def lines_text(records) -> bytes:
    return "\n".join(compact(r) for r in records).encode()


def read_all(data: bytes, **kwargs) -> tuple[list, int]:
    """The records a Reader yields for `data`, and how many chunks it reported."""
    chunks = []
    reader = Reader(io.BytesIO(data), 1 << 40, on_chunk=lambda: chunks.append(reader.records), **kwargs)
    return list(reader), len(chunks)


def peak_while_reading(data: bytes, **kwargs) -> int:
    """The most memory Python held at once while a Reader read `data` (the input itself not counted)."""
    stream = io.BytesIO(data)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in Reader(stream, 1 << 40, **kwargs):
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# --- white space ----------------------------------------------------------------------------------

def padded_document(pad: bytes) -> bytes:
    return pad + b"[" + pad + (b"," + pad).join(compact(r).encode() for r in GOOD) + pad + b"]" + pad


def padded_lines(pad: bytes) -> bytes:
    return pad + (b"\n" + pad).join(compact(r).encode() for r in GOOD) + pad


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("shape", [padded_document, padded_lines], ids=["document", "jsonl"])
def test_records_among_megabytes_of_white_space_load(conn, write, shape, compress):
    data = shape(WS * 2)
    summary = run_file(conn, write("padded.data", gzip.compress(data) if compress else data))
    assert (summary["status"], summary["input_records"], summary["inserted"]) == ("succeeded", 3, 3)
    assert set(target(conn)) == {"k0", "k1", "k2"}


def test_json_lines_keep_their_line_numbers_across_white_space(conn, write):
    newlines = b"\n" * (3 * MiB)  # blank lines after the first line: a reader that gathers them is quadratic
    data = (compact(GOOD[0]).encode() + b"\n" + WS + b"   " + compact(GOOD[1]).encode() + newlines
            + b"  {broken\n" + WS + compact(GOOD[2]).encode() + b"\n" + WS)
    run_file(conn, write("gaps.jsonl", data))
    text = data.decode()
    expected = [text.count("\n", 0, text.index(marker)) + 1 for marker in ('"k1"', "{broken", '"k2"')]
    staged = fetch(conn, "SELECT pos, line FROM lineage WHERE step = 'staged' ORDER BY pos")
    assert staged == [(1, 1), (2, expected[0]), (4, expected[2])]
    assert fetch(conn, "SELECT pos, line, error, raw FROM dead_letters") == [
        (3, expected[1], "malformed_json", "  {broken")]


@pytest.mark.parametrize("data", [WS * 8, b"\xef\xbb\xbf" + WS * 8, gzip.compress(WS * 8 + b"[]"),
                                  WS * 8 + b"[" + WS * 4 + b"]" + WS * 4],
                         ids=["white-space", "bom", "gzip-then-empty-array", "empty-array"])
def test_a_file_of_white_space_is_empty_and_read_chunk_by_chunk(conn, write, data):
    summary = run_file(conn, write("blank.data", data))
    assert (summary["status"], summary["input_records"]) == ("succeeded", 0)
    size = len(gzip.decompress(data)) if data[:2] == b"\x1f\x8b" else len(data)
    assert read_all(data)[1] >= size // CHUNK  # the progress hook is called for every chunk


@pytest.mark.parametrize("shape", [padded_document, padded_lines], ids=["document", "jsonl"])
def test_white_space_is_never_gathered_in_memory(shape):
    data = shape(WS * 12)
    assert len(data) > 40 * MiB
    assert peak_while_reading(data) < 6 * MiB  # a chunk, its decoded text and a little more


def test_an_error_after_dropped_white_space_still_says_where(conn, write):
    content = b"\n" * 3 + b" " * (2 * CHUNK + 5) + b'[{"key": "a"} {"key": "b"}]'
    with pytest.raises(RunFailed, match=f"invalid JSON at line 4, column {2 * CHUNK + 5 + 15}:"):
        run_file(conn, write("late.json", content))


def test_progress_moves_and_a_cancel_stops_the_run_inside_white_space(conn, write):
    data = b"[" + compact(GOOD[0]).encode() + b"," + WS * 12 + compact(GOOD[1]).encode() + b"]"
    path = write("spaces.json", data)
    seen = []

    def watch(phase, records, nbytes):
        seen.append((phase, records, nbytes))

    assert run_file(conn, path, progress=watch)["inserted"] == 2
    reading = [n for phase, _, n in seen if phase == "reading"]
    assert len(reading) >= 12 and reading == sorted(reading) and 0 < reading[len(reading) // 2] < len(data)

    calls = []

    def cancel_after_the_first_call(phase, records, nbytes):
        calls.append(nbytes)
        if len(calls) > 1:
            raise RunCancelled()

    with pytest.raises(RunFailed, match="cancelled") as failed:
        run_file(conn, path, progress=cancel_after_the_first_call)
    assert calls[-1] < len(data) // 2  # stopped in the white space, not after reading the whole file
    assert fetch(conn, "SELECT status FROM runs WHERE id = :id", id=failed.value.run_id) == [("cancelled",)]


# --- the record limit -----------------------------------------------------------------------------

def big_record(size: int, key="big") -> dict:
    """A valid record whose JSON text is about `size` bytes, with brackets and escapes in its strings."""
    return rec(key=key, blob=['x]}{["\\' * (size // 12)], note="é")


def dead_letters(conn):
    return fetch(conn, "SELECT pos, line, key, error, detail, raw, status, attempts FROM dead_letters ORDER BY pos")


@pytest.mark.parametrize("jsonl", [False, True], ids=["document", "jsonl"])
@pytest.mark.parametrize("size", [10_000, 300_000], ids=["under-64KiB", "over-64KiB"])
def test_a_record_over_the_limit_is_a_dead_letter_and_the_rest_loads(conn, write, jsonl, size):
    big = big_record(size)
    records = [GOOD[0], big, GOOD[1], big_record(size, key="other"), GOOD[2]]
    text = compact(big)
    data = lines_text(records) if jsonl else compact(records).encode()
    summary = run_file(conn, write("big.data", data), settings=SMALL)
    assert (summary["status"], summary["input_records"], summary["inserted"], summary["rejected"]) == (
        "succeeded", 5, 3, 2)
    assert set(target(conn)) == {"k0", "k1", "k2"}
    first, second = dead_letters(conn)
    assert (first.pos, first.line, first.key, first.error) == (2, 2 if jsonl else None, None, "record_too_large")
    size_bytes = len(text.encode())
    assert first.detail == (f"the record is {size_bytes / 1024:.1f} KiB ({size_bytes:,} bytes), "
                            "over the record limit of 4 KiB").replace(".0 KiB", " KiB")
    assert first.raw == text.encode()[:65536].decode("utf-8", "ignore")  # its first 64 KiB, whole characters
    assert second.error == "record_too_large" and second.raw != first.raw


@pytest.mark.parametrize("jsonl", [False, True], ids=["document", "jsonl"])
def test_a_record_over_the_limit_is_skipped_through_not_held(conn, write, jsonl):
    huge = big_record(24 * MiB)
    data = lines_text([GOOD[0], huge, GOOD[1]]) if jsonl else compact([GOOD[0], huge, GOOD[1]]).encode()
    settings = Settings(max_record_bytes=MiB)
    assert peak_while_reading(data, max_record=MiB) < 8 * MiB  # the record is 24 MiB
    summary = run_file(conn, write("huge.data", data), settings=settings)
    assert (summary["inserted"], summary["rejected"]) == (2, 1)
    (letter,) = dead_letters(conn)
    assert letter.error == "record_too_large" and "over the record limit of 1 MiB" in letter.detail
    assert f"({len(compact(huge).encode()):,} bytes)" in letter.detail
    assert letter.raw == compact(huge)[:65536]


def test_a_single_record_document_and_a_one_line_array_over_the_limit(conn, write):
    one = run_file(conn, write("one.json", json.dumps(big_record(10_000))), settings=SMALL)
    assert (one["status"], one["input_records"], one["rejected"]) == ("succeeded", 1, 1)
    # A one-line array longer than the record limit is a document, not one JSON line too large.
    line = run_file(conn, write("line.json", json.dumps([GOOD[0], big_record(10_000, key="x"), GOOD[1]])),
                    settings=SMALL)
    assert (line["input_records"], line["inserted"], line["rejected"]) == (3, 2, 1)
    # So is a file whose first line is longer than the limit, even when more lines follow.
    with pytest.raises(RunFailed, match="line 2, column 1: unexpected data after the JSON document"):
        run_file(conn, write("lines.jsonl", lines_text([big_record(10_000), GOOD[0]])), settings=SMALL)


@pytest.mark.parametrize("tail", ['{"key": "x", "blob": "' + "y" * 9000,  # the string never ends
                                  '{"key": "x", "blob": ["' + "y" * 9000 + '"',  # nor the object
                                  '"' + "y" * 9000])
def test_a_record_over_the_limit_without_an_end_fails_naming_the_limit(conn, write, tail):
    content = "[" + compact(GOOD[0]) + ",\n" + compact(GOOD[1]) + ", " + tail
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("cut.json", content), settings=SMALL)
    assert str(failed.value) == "record 3 is larger than the record limit of 4 KiB and its end was not found"
    assert target(conn) == {}
    # Under the limit the same file is invalid JSON, and the message says where.
    with pytest.raises(RunFailed, match="invalid JSON at line 2"):
        run_file(conn, write("cut.json", content), settings=Settings(max_record_bytes=MiB))


def test_a_last_json_line_over_the_limit_ends_with_the_file(conn, write):
    data = lines_text([GOOD[0], GOOD[1]]) + b"\n" + b'{"key": "x", "blob": "' + b"y" * 9000
    summary = run_file(conn, write("last.jsonl", data), settings=SMALL)
    assert (summary["inserted"], summary["rejected"]) == (2, 1)
    assert dead_letters(conn)[0].error == "record_too_large"


def test_a_record_too_large_is_retried_only_with_an_edit(conn, write):
    run_file(conn, write("big.json", compact([GOOD[0], big_record(10_000)])), settings=SMALL)
    (letter,) = dead_letters(conn)
    (dl_id,) = [r.id for r in fetch(conn, "SELECT id FROM dead_letters")]
    for attempt in (1, 2):  # unchanged, it stays too large, whatever the limit of the retry
        summary = reprocess(conn, [dl_id])
        assert (summary["status"], summary["rejected"], summary["dead_letters"]) == ("succeeded", 1, 0)
        again = dead_letters(conn)[0]
        assert (again.status, again.error, again.detail, again.attempts) == (
            "open", "record_too_large", letter.detail, attempt)
        assert again.raw == letter.raw
    fixed = reprocess(conn, [dl_id], edited=rec(key="fixed"))
    assert (fixed["status"], fixed["inserted"]) == ("succeeded", 1)
    assert dead_letters(conn)[0].status == "resolved"
