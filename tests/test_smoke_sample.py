"""The seed's sample and generated files: the summary, lineage, and conservation laws against the database."""

import json
import subprocess
import sys

from app.pipeline import Options, run_file

from .conftest import MAKE_RECORDS, SAMPLE_INPUT, SAMPLE_SUMMARY
from .pipeline_helpers import fetch, scalar

STEPS = ("skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged", "stale")


def test_sample_gives_the_seed_summary_then_skips_six(conn):
    expected = json.loads(SAMPLE_SUMMARY.read_text())
    summary = run_file(conn, SAMPLE_INPUT)
    assert {k: summary[k] for k in expected} == expected
    entries = fetch(conn, "SELECT step, key FROM lineage ORDER BY id")
    assert len(entries) == 12
    assert sorted(step for step, _ in entries) == ["inserted"] * 5 + ["rejected"] * 2 + ["staged"] * 5
    assert sorted(key for step, key in entries if step == "rejected") == ["", "evt-004"]
    assert fetch(conn, "SELECT pos, key, error, detail FROM dead_letters ORDER BY pos") == [
        (4, None, "missing_key", "key is empty"),
        (5, "evt-004", "invalid_value", "value 'abc' is not a number"),
    ]
    again = run_file(conn, SAMPLE_INPUT)
    assert (
        again["skipped"],
        again["staged"],
        again["unchanged"],
        again["loaded"],
        again["rejected"],
        again["dead_letters"],
    ) == (6, 1, 1, 0, 0, 0)
    assert again["watermark"] == "2025-01-15T12:00:00"
    assert fetch(
        conn, "SELECT key FROM lineage WHERE run_id = :r AND step = 'unchanged'", r=again["run_id"]
    ) == [("evt-005",)]


def make_records(tmp_path, name, n, *args) -> str:
    path = tmp_path / name
    subprocess.run([sys.executable, str(MAKE_RECORDS), str(n), str(path), *args], check=True, timeout=120)
    return path


def check_against_the_database(conn, summary) -> None:
    """Conservation laws of SPEC §2, and every count equal to what the run wrote."""
    assert summary["input_records"] == summary["skipped"] + summary["rejected"] + summary["staged"]
    assert summary["staged"] == (
        summary["superseded"]
        + summary["inserted"]
        + summary["updated"]
        + summary["unchanged"]
        + summary["stale"]
    )
    per_step = dict(
        fetch(conn, "SELECT step, count(*) FROM lineage WHERE run_id = :r GROUP BY step", r=summary["run_id"])
    )
    assert {step: per_step.get(step, 0) for step in STEPS} == {step: summary[step] for step in STEPS}
    assert sum(per_step.values()) == summary["lineage_entries"]
    # Every record read has an entry at its position; a staged record has exactly two.
    assert (
        scalar(conn, "SELECT count(DISTINCT pos) FROM lineage WHERE run_id = :r", r=summary["run_id"])
        == summary["input_records"]
    )
    assert (
        scalar(conn, "SELECT count(*) FROM dead_letters WHERE run_id = :r", r=summary["run_id"])
        == summary["dead_letters"]
    )
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM lineage WHERE run_id = :r AND step = 'rejected' AND dead_letter_id IS NULL",
            r=summary["run_id"],
        )
        == 0
    )
    assert summary["watermark"] == scalar(conn, "SELECT max(ts) FROM target")


def test_conservation_on_generated_files_matches_the_database(conn, tmp_path):
    path = make_records(tmp_path, "first.json", 20_000, "--seed", "7")
    seen = []
    first = run_file(conn, path, progress=lambda *args: seen.append(args))
    assert first["status"] == "succeeded" and first["input_records"] == 20_000
    # Progress while reading: every 20k records, with how far into the file the reader is.
    reading = [(records, nbytes) for phase, records, nbytes in seen if phase == "reading"]
    assert any(records == 20_000 and 0 < nbytes <= path.stat().st_size for records, nbytes in reading)
    assert [b for _, b in reading] == sorted(b for _, b in reading)
    assert seen[-1][:2] == ("done", 20_000)
    assert first["rejected"] > 500 and first["superseded"] > 1000 and first["inserted"] > 10_000
    check_against_the_database(conn, first)
    assert scalar(conn, "SELECT count(*) FROM target") == first["inserted"]
    assert scalar(conn, "SELECT sum(sightings) FROM dead_letters") == first["rejected"]
    # A second file, JSON Lines and gzip, overlapping the first in keys and time.
    second = run_file(
        conn,
        make_records(
            tmp_path,
            "second.ndjson.gz",
            10_000,
            "--seed",
            "8",
            "--format",
            "ndjson",
            "--gzip",
            "--start",
            "2024-01-01T04:00:00",
        ),
    )
    check_against_the_database(conn, second)
    assert second["skipped"] > 0 and second["updated"] > 0 and second["inserted"] > 0
    assert scalar(conn, "SELECT count(*) FROM target") == first["inserted"] + second["inserted"]
    assert (
        scalar(conn, "SELECT count(*) FROM target WHERE run_id = :r", r=second["run_id"])
        == second["inserted"] + second["updated"]
    )
    assert scalar(conn, "SELECT sum(sightings) FROM dead_letters") == first["rejected"] + second["rejected"]
    # A backfill of the second file: nothing skipped, and the stale rule decides instead.
    backfill = run_file(conn, tmp_path / "second.ndjson.gz", options=Options(ignore_watermark=True))
    check_against_the_database(conn, backfill)
    assert (backfill["input_records"], backfill["skipped"]) == (10_000, 0)
    assert backfill["unchanged"] > 0 and backfill["stale"] > 0
    assert (
        scalar(conn, "SELECT count(*) FROM target")
        == first["inserted"] + second["inserted"] + backfill["inserted"]
    )


def test_cli_run_prints_summary(runner, tmp_path):
    out = tmp_path / "summary.json"
    result = runner.invoke(args=["etl", "run", str(SAMPLE_INPUT), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["lineage_entries"] == 12
