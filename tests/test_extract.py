"""Input files (SPEC §1): formats, gzip, BOM, JSON errors with their place, limits, empty inputs."""

import gzip
import json

import pytest

from app.pipeline import RunFailed, Settings, run_file, sniff

from .pipeline_helpers import fetch, load, rec, snapshot, target

RECORDS = [rec(key=f"k{i}", value=i, ts=f"2025-01-15T12:00:0{i}") for i in range(3)]
LOADED = {f"k{i}": ("n", float(i), f"2025-01-15T12:00:0{i}") for i in range(3)}


def run_status(conn, run_id):
    return fetch(conn, "SELECT status, error FROM runs WHERE id = :id", id=run_id)[0]


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(RECORDS, indent=2),  # pretty-printed array
        json.dumps(RECORDS),  # one-line array
        "\n".join(json.dumps(r) for r in RECORDS),  # JSON Lines
        "\n\n" + "\n\n  \n".join(json.dumps(r) for r in RECORDS) + "\n\n",  # JSON Lines with blank lines
        "\r\n".join(json.dumps(r) for r in RECORDS) + "\r\n",  # JSON Lines, CRLF
        "\ufeff" + json.dumps(RECORDS),  # a byte-order mark
        "\ufeff" + "\n".join(json.dumps(r) for r in RECORDS),
        " \n\t" + json.dumps(RECORDS, indent=1) + "\n \n",
    ],
    ids=[
        "pretty",
        "one-line",
        "jsonl",
        "jsonl-blank-lines",
        "jsonl-crlf",
        "bom-array",
        "bom-jsonl",
        "white-space",
    ],
)
def test_formats_load_the_same_records(conn, write, content):
    summary = run_file(conn, write("in.data", content))
    assert (summary["status"], summary["input_records"], summary["inserted"], summary["rejected"]) == (
        "succeeded",
        3,
        3,
        0,
    )
    assert target(conn) == LOADED


def test_a_single_object_is_one_record(conn, write):
    summary = run_file(conn, write("one.json", json.dumps(RECORDS[0], indent=2)))
    assert (summary["input_records"], summary["inserted"]) == (1, 1)
    one_line = run_file(conn, write("two.json", json.dumps(rec(key="solo", ts="2025-01-16T00:00:00"))))
    assert (one_line["input_records"], one_line["inserted"]) == (1, 1)
    assert set(target(conn)) == {"k0", "solo"}


@pytest.mark.parametrize("name", ["in.json.gz", "in.json", "upload.bin"])
@pytest.mark.parametrize("jsonl", [False, True], ids=["array", "jsonl"])
def test_gzip_is_recognised_by_its_magic_bytes_whatever_the_name(conn, write, name, jsonl):
    text = "\n".join(json.dumps(r) for r in RECORDS) if jsonl else json.dumps(RECORDS)
    summary = run_file(conn, write(name, gzip.compress(("\ufeff" + text).encode())))
    assert (summary["input_records"], summary["inserted"]) == (3, 3)
    assert target(conn) == LOADED


def test_json_lines_keep_line_numbers_and_a_bad_line_is_a_dead_letter(conn, write):
    lines = [
        json.dumps(RECORDS[0]),
        "",
        '{"key": "broken", "name": ',
        json.dumps(RECORDS[1]),
        "   ",
        "[1, 2]",
        "NaN",
        json.dumps(rec(key="bad", value="abc")),
        json.dumps(RECORDS[2]),
    ]
    summary = run_file(conn, write("in.jsonl", "\n".join(lines) + "\n"))
    assert (summary["status"], summary["input_records"], summary["inserted"], summary["rejected"]) == (
        "succeeded",
        7,
        3,
        4,
    )
    assert target(conn) == LOADED
    rows = fetch(conn, "SELECT pos, line, error, raw FROM dead_letters ORDER BY pos")
    assert [(r.pos, r.line, r.error) for r in rows] == [
        (2, 3, "malformed_json"),
        (4, 6, "not_an_object"),
        (5, 7, "malformed_json"),
        (6, 8, "invalid_value"),
    ]
    assert rows[0].raw == '{"key": "broken", "name": '  # a malformed line is kept as its text
    assert rows[2].raw == "NaN"
    bad_value = fetch(conn, "SELECT pos, line, key FROM lineage WHERE step = 'rejected' ORDER BY pos")
    assert [(r.pos, r.line, r.key) for r in bad_value] == [(2, 3, ""), (4, 6, ""), (5, 7, ""), (6, 8, "bad")]
    staged = fetch(conn, "SELECT pos, line, key FROM lineage WHERE step = 'staged' ORDER BY pos")
    assert [(r.pos, r.line, r.key) for r in staged] == [(1, 1, "k0"), (3, 4, "k1"), (7, 9, "k2")]


def test_json_lines_whose_last_line_has_no_newline(conn, write):
    content = json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[1]) + "\n" + '{"key": "x"'
    summary = run_file(conn, write("in.jsonl", content))
    assert (summary["input_records"], summary["inserted"], summary["rejected"]) == (3, 2, 1)
    assert fetch(conn, "SELECT pos, line, error, raw FROM dead_letters") == [
        (3, 3, "malformed_json", '{"key": "x"')
    ]


def test_a_json_lines_record_that_is_not_an_object_or_is_a_number_beyond_range(conn, write):
    content = '{"key": "a", "name": "n", "value": 1e400, "ts": "2025-01-15T12:00:00"}\n"text"\n' + json.dumps(
        RECORDS[0]
    )
    summary = run_file(conn, write("in.jsonl", content))
    assert (summary["rejected"], summary["inserted"]) == (2, 1)
    assert [r.error for r in fetch(conn, "SELECT error FROM dead_letters ORDER BY pos")] == [
        "invalid_value",
        "not_an_object",
    ]


def test_a_malformed_array_fails_the_run_with_line_and_column_and_changes_nothing(conn, write):
    load(conn, write, RECORDS[:1], name="first.json")
    before = snapshot(conn)
    content = (
        '[\n  {"key": "a", "name": "n", "value": 1, "ts": "2025-01-16T00:00:00"},\n'
        '  {"key": "b" "name": "n"}\n]'
    )
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(content)
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("bad.json", content))
    where = f"line {expected.value.lineno}, column {expected.value.colno}"
    assert where == "line 3, column 15"
    assert where in str(failed.value)
    assert run_status(conn, failed.value.run_id) == ("failed", str(failed.value))
    assert snapshot(conn) == before


@pytest.mark.parametrize(
    "content, where",
    [
        ('[{"key": "a"}, ]', "line 1, column 16"),
        ('[{"key": "a"} {"key": "b"}]', "line 1, column 15"),
        ('[{"key": "a"}', "line 1, column 14"),
        ('{"key": "a"} {"key": "b"}', "line 1, column 14"),  # two documents on one line
        ('[{"key": "a"}] ]', "line 1, column 16"),
        ('[\n{"key": "a", "value": NaN}]', "line 2, column 23"),  # NaN is not JSON
        ('[\n\n{"key": "NaN", "value": -Infinity}]', "line 3, column 25"),
        ('{\n  "key": "Infinity",\n  "value": Infinity\n}', "line 3, column 12"),
        ("[", "line 1, column 2"),  # the file ends where a record is due
        ("[1,", "line 1, column 4"),
        ('[{"key": "a"},\n  ', "line 2, column 3"),
    ],
)
def test_invalid_json_documents_fail_and_say_where(conn, write, content, where):
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("bad.json", content))
    assert "invalid JSON" in str(failed.value) and where in str(failed.value)
    assert fetch(conn, "SELECT count(*) FROM lineage") == [(0,)]
    assert fetch(conn, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_invalid_utf8_fails_with_a_byte_offset(conn, write):
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("latin1.json", b'[{"key": "caf\xe9"}]'))
    assert "not valid UTF-8 (byte offset 13)" in str(failed.value)


def test_an_error_after_a_large_element_reports_the_right_place(conn, write):
    # One element larger than the 1 MiB read chunk, then padded ones that cross many chunk boundaries.
    big = rec(key="big", blob="x" * (3 << 19))
    padded = [rec(key=f"s{i:04d}", pad="\u00e9" * (7919 + i)) for i in range(400)]
    lines = [json.dumps(big)] + [json.dumps(r, ensure_ascii=False) for r in padded]
    good = "[\n" + ",\n".join(lines) + "\n]"
    assert len(good.encode()) > 6 << 20
    summary = run_file(conn, write("big.json", good))
    assert (summary["input_records"], summary["inserted"]) == (401, 401)
    assert fetch(conn, "SELECT count(*) FROM target") == [(401,)]
    bad = "[\n" + ",\n".join(lines) + ",\n  {oops}\n]"
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("bad.json", bad))
    assert f"line {len(lines) + 2}, column 4" in str(failed.value)


def test_a_big_element_in_json_lines_spans_chunks(conn, write):
    big = rec(key="big", blob="é" * (2 << 20))
    content = (
        json.dumps(RECORDS[0]) + "\n" + json.dumps(big, ensure_ascii=False) + "\n" + json.dumps(RECORDS[1])
    )
    summary = run_file(conn, write("big.jsonl", content))
    assert (summary["input_records"], summary["inserted"]) == (3, 3)


@pytest.mark.parametrize(
    "content", [b"", b"   \n\n", b"\xef\xbb\xbf", b"[]", b" [ \n ] \n", gzip.compress(b"", mtime=0)]
)
def test_empty_inputs_succeed_with_nothing_loaded(conn, write, content):
    summary = run_file(conn, write("empty.json", content))
    assert (summary["status"], summary["input_records"], summary["loaded"], summary["watermark"]) == (
        "succeeded",
        0,
        0,
        None,
    )
    assert fetch(conn, "SELECT count(*) FROM lineage") == [(0,)]


def test_a_file_where_every_record_is_rejected_succeeds(conn, write):
    summary = load(conn, write, [rec(value="abc"), rec(key=""), "x"])
    assert (
        summary["status"],
        summary["input_records"],
        summary["rejected"],
        summary["loaded"],
        summary["dead_letters"],
    ) == ("succeeded", 3, 3, 0, 3)
    assert target(conn) == {}


@pytest.mark.parametrize(
    "content",
    [
        b"hello",
        b"<html></html>",
        b"\xef\xbb\xbfname,value\n",
        b"PK\x03\x04zip",
        b"  # comment\n[]",
        "[]".encode("utf-16"),
    ],
)
def test_a_file_that_cannot_start_json_is_refused(conn, write, content):
    assert sniff(content[:64]) is not None
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("not.json", content))
    assert "does not start like JSON, JSON Lines or gzip" in str(failed.value)
    assert run_status(conn, failed.value.run_id)[0] == "failed"


@pytest.mark.parametrize(
    "head", [b"[", b"{", b"\xef\xbb\xbf[", b"  \n{", b"\x1f\x8b\x08", b"", b"123", b'"s"', b"null"]
)
def test_sniff_accepts_what_can_start_json_or_gzip(head):
    assert sniff(head) is None


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_the_decompressed_size_limit_fails_the_run_naming_the_limit(conn, write, compress):
    load(conn, write, RECORDS[:1], name="first.json")
    before = snapshot(conn)
    content = json.dumps([rec(key=f"k{i}") for i in range(200)]).encode()
    assert len(content) > 4096
    path = write("bomb.json", gzip.compress(content) if compress else content)
    with pytest.raises(RunFailed) as failed:
        run_file(conn, path, settings=Settings(max_decompressed_bytes=4096))
    assert "decompressed size limit of 4 KiB" in str(failed.value)
    assert run_status(conn, failed.value.run_id) == ("failed", str(failed.value))
    assert snapshot(conn) == before
    # Under the limit the same file loads.
    assert run_file(conn, path, settings=Settings(max_decompressed_bytes=len(content)))["loaded"] == 200


def test_a_truncated_gzip_file_fails_with_a_clear_message(conn, write):
    data = gzip.compress(json.dumps(RECORDS).encode())
    with pytest.raises(RunFailed) as failed:
        run_file(conn, write("cut.gz", data[: len(data) // 2]))
    assert "gzip" in str(failed.value)


def test_a_malformed_line_with_nul_or_bad_utf8_is_kept_escaped(conn, write):
    content = (
        json.dumps(RECORDS[0]).encode()
        + b'\n{"key": "b\x00c", \xff\xfe\r\n'
        + b"caf\xe9\n"
        + json.dumps(RECORDS[1]).encode()
    )
    summary = run_file(conn, write("odd.jsonl", content))
    assert (summary["status"], summary["inserted"], summary["rejected"]) == ("succeeded", 2, 2)
    assert fetch(conn, "SELECT line, error, raw FROM dead_letters ORDER BY pos") == [
        (2, "malformed_json", '{"key": "b\\u0000c", \\xff\\xfe'),
        (3, "malformed_json", "caf\\xe9"),
    ]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_the_upload_size_limit_fails_the_run_naming_the_limit(conn, write, compress):
    content = json.dumps([rec(key=f"k{i}", name=f"{i * 7919 % 10007:x}") for i in range(300)]).encode()
    data = gzip.compress(content) if compress else content
    assert len(data) > 1000
    path = write("large.json", data)
    with pytest.raises(RunFailed, match="larger than the upload size limit of 1,000 bytes"):
        run_file(conn, path, settings=Settings(max_upload_bytes=1000))
    assert target(conn) == {}
    assert run_file(conn, path, settings=Settings(max_upload_bytes=len(data)))["inserted"] == 300
