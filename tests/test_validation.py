"""The record rules of SPEC §1–2: every error code, their order, valid forms and canonical text."""

import json
from datetime import timedelta

import pytest

from app.pipeline import Settings, run_file
from app.pipeline.validate import canonical, utc_now

from .pipeline_helpers import fetch, load, rec, target

LONG_KEY = "k" * 257
LONG_NAME = "n" * 1025

# Each error code with the ways a record earns it; every other field of the record is valid.
INVALID = {
    "not_an_object": [["an", "array"], "a string", 42, None, True],
    "missing_key": [
        {"name": "n", "value": 1, "ts": "2025-01-15T12:00:00"},
        rec(key=None),
        rec(key=""),
        rec(key="  \t "),
    ],
    "invalid_key": [
        rec(key=7),
        rec(key=["k"]),
        rec(key=LONG_KEY),
        rec(key="a\u0000b"),
        rec(key="a\ud800b"),
        rec(key="\udc00"),
    ],
    "missing_name": [{"key": "k", "value": 1, "ts": "2025-01-15T12:00:00"}, rec(name=None), rec(name=" ")],
    "invalid_name": [rec(name=LONG_NAME), rec(name=3), rec(name={"a": 1}), rec(name="x\u0000")],
    "missing_value": [
        {"key": "k", "name": "n", "ts": "2025-01-15T12:00:00"},
        rec(value=None),
        rec(value=""),
        rec(value="   "),
    ],
    "invalid_value": [
        rec(value=v)
        for v in (
            "abc",
            "1_000",
            "0x10",
            "nan",
            "NaN",
            "Infinity",
            "1e400",
            "-1e400",
            "1.",
            "1e",
            "12x",
            "1 000",
            "\u0661\u0662",
            "\uff11",
            "1,5",
            "--1",
            "e3",
            True,
            False,
            [1],
            {"v": 1},
        )
    ],
    "missing_timestamp": [{"key": "k", "name": "n", "value": 1}, rec(ts=None), rec(ts=""), rec(ts="  ")],
    "invalid_timestamp": [
        rec(ts=t)
        for t in (
            "2025-01-15",  # a date alone
            "2025-W03-3T12:00:00",  # a week date
            "20250115T123000Z",  # the basic format
            "2025-01-15T12:30:00.1234567",  # 7 fractional digits
            "2025-01-15T12:30:00.",  # a dot without digits
            "2024-02-30T10:00:00",  # no such day
            "2025-01-15T24:00:00",  # no such hour
            "2025-01-15T12:60",  # no such minute
            "0001-01-01T00:00:00+01:00",  # overflows when converted to UTC
            "2025-01-15T12:30:00+24:00",  # no such offset
            "2025-01-15T12:30:00+0200",  # offset without colon
            "2025-01-15T12",  # hour alone
            "2025-01-15t12:30:00",  # lower-case separator
            "2025-01-15T12:30:00 Z",
            "2016-12-31T23:59:60Z",  # a leap second
            "\uff12025-01-15T12:30:00",  # a non-ASCII digit
            "2025-01-15T12:30:00+02:00:00",
            "not-a-date",
        )
    ]
    + [rec(ts=1736944200), rec(ts=["2025-01-15T12:00:00"])],
    "future_timestamp": [rec(ts="2999-01-01T00:00:00"), rec(ts="9999-12-31T23:59:59.999999")],
}


@pytest.mark.parametrize("code", INVALID)
def test_each_error_code(conn, write, code):
    records = INVALID[code]
    summary = load(conn, write, records)
    assert (summary["status"], summary["rejected"], summary["staged"]) == ("succeeded", len(records), 0)
    rows = fetch(conn, "SELECT pos, error FROM dead_letters ORDER BY pos")
    assert rows == [(i, code) for i in range(1, len(records) + 1)]
    assert target(conn) == {}


def test_a_number_beyond_the_double_range_is_invalid_value(conn, write):
    path = write(
        "big.json",
        '[{"key": "a", "name": "n", "value": 1e400, "ts": "2025-01-15T12:00:00"},'
        ' {"key": "b", "name": "n", "value": -1e999, "ts": "2025-01-15T12:00:00"},'
        ' {"key": "c", "name": "n", "value": 1' + "0" * 400 + ', "ts": "2025-01-15T12:00:00"},'
        ' {"key": "d", "name": "n", "value": 18446744073709551616, "ts": "2025-01-15T12:00:00"}]',
    )
    summary = run_file(conn, path)
    assert (summary["rejected"], summary["staged"]) == (3, 1)
    assert target(conn)["d"][1] == 2.0**64  # large, but within the double range
    rows = fetch(conn, "SELECT key, error, detail, raw FROM dead_letters ORDER BY pos")
    assert [(r.key, r.error) for r in rows] == [
        ("a", "invalid_value"),
        ("b", "invalid_value"),
        ("c", "invalid_value"),
    ]
    assert json.loads(rows[2].raw)["value"] == 10**400
    assert "outside the range of a double" in rows[0].detail
    # The raw record keeps the number as a JSON number, never as the non-JSON `Infinity`.
    assert json.loads(rows[0].raw)["value"] == float("inf")
    assert "Infinity" not in rows[0].raw and "Infinity" not in rows[1].raw


def test_the_first_failing_rule_wins(conn, write):
    records = [
        {"value": "abc", "ts": "bad"},  # everything wrong: the key comes first
        {"key": 5, "value": None},  # invalid key before a missing name
        {"key": "k", "name": None, "value": "abc", "ts": "bad"},  # missing name before the value
        {"key": "k", "name": 5, "value": None},  # invalid name before a missing value
        {"key": "k", "name": "n", "value": None, "ts": "bad"},  # missing value before the timestamp
        {"key": "k", "name": "n", "value": "x", "ts": None},  # invalid value before a missing ts
        {"key": "k", "name": "n", "value": 1},  # missing ts
        {"key": "k", "name": "n", "value": 1, "ts": "2999-13-01T00:00:00"},  # invalid before future
        {"key": LONG_KEY, "name": LONG_NAME},  # invalid key before invalid name
    ]
    load(conn, write, records)
    assert [r.error for r in fetch(conn, "SELECT error FROM dead_letters ORDER BY pos")] == [
        "missing_key",
        "invalid_key",
        "missing_name",
        "invalid_name",
        "missing_value",
        "invalid_value",
        "missing_timestamp",
        "invalid_timestamp",
        "invalid_key",
    ]


def test_the_future_tolerance_is_configurable(conn, write):
    soon = canonical(utc_now() + timedelta(hours=2))
    in_two_days = canonical(utc_now() + timedelta(days=2))
    summary = load(conn, write, [rec(key="soon", ts=soon), rec(key="later", ts=in_two_days)])
    assert (summary["inserted"], summary["rejected"]) == (1, 1)
    assert fetch(conn, "SELECT key, error FROM dead_letters") == [("later", "future_timestamp")]
    # With no tolerance, two hours from now is already the future.
    strict = load(conn, write, [rec(key="soon2", ts=soon)], settings=Settings(future_tolerance=timedelta(0)))
    assert strict["rejected"] == 1
    assert fetch(conn, "SELECT error FROM dead_letters WHERE key = 'soon2'") == [("future_timestamp",)]


VALID_VALUES = [
    (1, 1.0),
    (-7, -7.0),
    (2.25, 2.25),
    (0, 0.0),
    (1e308, 1e308),
    ("3.5", 3.5),
    (" -2 ", -2.0),
    ("1e3", 1000.0),
    (".5", 0.5),
    ("+4", 4.0),
    ("-0.25E-2", -0.0025),
    ("007", 7.0),
    ("\t12\n", 12.0),
]
VALID_TIMESTAMPS = [
    ("2025-01-15T12:30:00", "2025-01-15T12:30:00"),
    ("2025-01-15 12:30:00", "2025-01-15T12:30:00"),  # space separator
    ("2025-01-15T12:30", "2025-01-15T12:30:00"),  # no seconds
    ("2025-01-15T12:30:00Z", "2025-01-15T12:30:00"),
    ("2025-01-15T12:30:00.5", "2025-01-15T12:30:00.500000"),
    ("2025-01-15T12:30:00.123456Z", "2025-01-15T12:30:00.123456"),
    ("2025-01-15T12:30:00.000000", "2025-01-15T12:30:00"),  # zero microseconds are not written
    ("2025-01-15T12:30:00.000", "2025-01-15T12:30:00"),
    ("2025-01-15T14:00:00+02:00", "2025-01-15T12:00:00"),  # offsets are converted to UTC
    ("2025-01-15T00:30:00-01:30", "2025-01-15T02:00:00"),
    ("2025-01-01T01:00:00+02:00", "2024-12-31T23:00:00"),  # across a year
    ("2024-02-29 23:59:59.999999-00:00", "2024-02-29T23:59:59.999999"),
    (" 2025-01-15T12:30:00+00:00 ", "2025-01-15T12:30:00"),
]


def test_valid_values(conn, write):
    summary = load(conn, write, [rec(key=f"v{i}", value=given) for i, (given, _) in enumerate(VALID_VALUES)])
    assert (summary["inserted"], summary["rejected"]) == (len(VALID_VALUES), 0)
    stored = target(conn)
    assert {given: stored[f"v{i}"][1] for i, (given, _) in enumerate(VALID_VALUES)} == dict(VALID_VALUES)


def test_valid_timestamps_and_canonical_text(conn, write):
    summary = load(conn, write, [rec(key=f"t{i}", ts=given) for i, (given, _) in enumerate(VALID_TIMESTAMPS)])
    assert (summary["inserted"], summary["rejected"]) == (len(VALID_TIMESTAMPS), 0)
    stored = target(conn)
    assert {given: stored[f"t{i}"][2] for i, (given, _) in enumerate(VALID_TIMESTAMPS)} == dict(
        VALID_TIMESTAMPS
    )
    assert summary["watermark"] == "2025-01-15T12:30:00.500000"
    details = {r.key: r.detail for r in fetch(conn, "SELECT key, detail FROM lineage WHERE step = 'staged'")}
    assert details["t4"] == "valid; ts 2025-01-15T12:30:00.500000"
    assert details["t8"] == "valid; ts 2025-01-15T12:00:00"


def test_keys_and_names_are_stored_trimmed_and_may_be_as_long_as_allowed(conn, write):
    key256, name1024 = "\U0001f600" * 256, "\u00e9" * 1024  # limits count characters, not bytes
    summary = load(
        conn,
        write,
        [
            rec(key="  k1\t", name=" first "),
            rec(key=f" {key256} ", name=f"\n{name1024} "),
            rec(key="k1", name="second ", ts="2025-01-15T13:00:00"),
        ],
    )
    assert (summary["inserted"], summary["superseded"], summary["rejected"]) == (2, 1, 0)
    assert target(conn) == {
        "k1": ("second", 1.0, "2025-01-15T13:00:00"),
        key256: (name1024, 1.0, "2025-01-15T12:00:00"),
    }
    assert {r.key for r in fetch(conn, "SELECT DISTINCT key FROM lineage")} == {"k1", key256}


def test_a_dead_letter_keeps_the_raw_record_its_detail_position_and_key(conn, write):
    records = [
        rec(key="ok"),
        {
            "zeta": [1, {"b": 2, "a": 1}],
            "key": " bad ",
            "name": "n",
            "value": "abc",
            "ts": "2025-01-15T12:00:00",
            "extra": "é",
        },
        {"key": "", "name": "orphan", "value": 2, "ts": "2025-01-13T10:00:00"},
    ]
    load(conn, write, records)
    rows = fetch(
        conn, "SELECT pos, line, key, error, detail, raw, status, sightings FROM dead_letters ORDER BY pos"
    )
    first, second = rows
    assert (first.pos, first.line, first.key, first.error, first.status) == (
        2,
        None,
        "bad",
        "invalid_value",
        "open",
    )
    assert first.detail == "value 'abc' is not a number"
    # Re-serialised with the keys in the order they came, other fields kept.
    assert first.raw == (
        '{"zeta":[1,{"b":2,"a":1}],"key":" bad ","name":"n","value":"abc",'
        '"ts":"2025-01-15T12:00:00","extra":"é"}'
    )
    assert list(json.loads(first.raw)) == ["zeta", "key", "name", "value", "ts", "extra"]
    assert (second.pos, second.key, second.error, second.detail) == (3, None, "missing_key", "key is empty")
    lineage = fetch(
        conn, "SELECT pos, key, detail, dead_letter_id FROM lineage WHERE step = 'rejected' ORDER BY pos"
    )
    ids = [r.id for r in fetch(conn, "SELECT id FROM dead_letters ORDER BY pos")]
    assert [(r.pos, r.key, r.dead_letter_id) for r in lineage] == [(2, "bad", ids[0]), (3, "", ids[1])]
    assert lineage[0].detail == "invalid_value: value 'abc' is not a number"


def test_nul_and_unpaired_surrogates_are_kept_escaped_in_the_raw_record(conn, write):
    load(conn, write, [rec(key="a\u0000b"), rec(key="x", name="y\ud83d")])
    rows = fetch(conn, "SELECT error, raw, detail FROM dead_letters ORDER BY pos")
    assert [r.error for r in rows] == ["invalid_key", "invalid_name"]
    assert json.loads(rows[0].raw)["key"] == "a\u0000b"
    assert "\\u0000" in rows[0].raw and "\\ud83d" in rows[1].raw
    assert json.loads(rows[1].raw)["name"] == "y\ud83d"
    assert "NUL character or an unpaired surrogate" in rows[0].detail


DETAILS = [
    (rec(key=None), "key is null"),
    ({"name": "n", "value": 1, "ts": "2025-01-15T12:00:00"}, "key is missing"),
    (rec(key=LONG_KEY), "key is 257 characters long; at most 256 are allowed"),
    (rec(name=LONG_NAME), "name is 1025 characters long; at most 1024 are allowed"),
    (rec(value=True), "value true is not a number"),
    (rec(value="   "), "value is empty"),
    (rec(ts="2025-01-15"), "ts '2025-01-15' is not a timestamp like 2025-01-15T12:30:00Z"),
    (rec(ts="2999-01-01T00:00:00"), "ts 2999-01-01T00:00:00 is later than now plus the tolerance"),
    ("text", "the record is a string, not a JSON object"),
    ([1], "the record is an array, not a JSON object"),
]


def test_detail_messages_say_what_is_wrong(conn, write):
    load(conn, write, [record for record, _ in DETAILS])
    details = [r.detail for r in fetch(conn, "SELECT detail FROM dead_letters ORDER BY pos")]
    assert [d[: len(expected)] for d, (_, expected) in zip(details, DETAILS)] == [d for _, d in DETAILS]
