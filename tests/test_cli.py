"""The command line (SPEC §7): every command, and errors as one clear line with a non-zero exit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.accounts.actor import os_user

from .conftest import SAMPLE_INPUT
from .pipeline_helpers import fetch

ROOT = Path(__file__).resolve().parents[1]


def etl(runner, *args, input=None):
    return runner.invoke(args=["etl", *map(str, args)], input=input)


def one_error_line(result) -> str:
    """The error a failed command printed: exactly one line, no traceback."""
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def usage_error(result) -> str:
    """A command line the command refuses: click's usage, then one error line; exit status 2."""
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


@pytest.fixture
def db(app):
    """A connection to the CLI app's database, for reading back what the commands did."""
    from app.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        yield conn


def test_run_prints_and_writes_the_summary(runner, db, tmp_path):
    out = tmp_path / "summary.json"
    result = etl(runner, "run", SAMPLE_INPUT, "--output", out)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == json.loads(out.read_text())
    assert (printed["input_records"], printed["loaded"], printed["rejected"], printed["watermark"]) == (
        7,
        5,
        2,
        "2025-01-15T12:00:00",
    )
    assert fetch(db, "SELECT kind, status, source_name FROM runs") == [
        ("cli", "succeeded", "sample_input.json")
    ]


def test_run_options(runner, db, write):
    assert etl(runner, "run", SAMPLE_INPUT).exit_code == 0
    late = write(
        "late.json", json.dumps([{"key": "late", "name": "n", "value": 1, "ts": "2024-01-01T00:00:00"}])
    )
    skipped = json.loads(etl(runner, "run", late).output)
    assert (skipped["skipped"], skipped["loaded"]) == (1, 0)
    dry = json.loads(etl(runner, "run", late, "--ignore-watermark", "--dry-run").output)
    assert (dry["dry_run"], dry["inserted"]) == (True, 1)
    assert fetch(db, "SELECT count(*) FROM target WHERE key = 'late'") == [(0,)]
    backfill = json.loads(etl(runner, "run", late, "--ignore-watermark").output)
    assert backfill["inserted"] == 1
    assert fetch(db, "SELECT count(*) FROM target WHERE key = 'late'") == [(1,)]
    bad = write(
        "bad.json",
        json.dumps(
            [{"key": "x", "value": "abc"}, {"key": "y", "name": "n", "value": 1, "ts": "2025-02-01T00:00:00"}]
        ),
    )
    line = one_error_line(etl(runner, "run", bad, "--max-reject-rate", "0.2"))
    assert "failed: 1 of 2 records were rejected (50.0%), over the reject threshold of 20.0%" in line
    assert "2.0 is not in the range 0<=x<=1" in usage_error(etl(runner, "run", bad, "--max-reject-rate", "2"))


def test_runs_lists_the_history_newest_first(runner, write):
    etl(runner, "run", SAMPLE_INPUT)
    etl(runner, "run", write("broken.json", "[{"))
    result = etl(runner, "runs")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["id", "kind", "status", "queued"]
    assert (
        lines[1].split()[:3] == ["2", "cli", "failed"]
        and "broken.json" in lines[1]
        and "invalid JSON" in lines[1]
    )
    first = lines[2].split()
    assert first[:3] == ["1", "cli", "succeeded"] and first[-5:] == ["7", "5", "2", "0", "sample_input.json"]
    assert len(etl(runner, "runs", "--limit", "1").output.splitlines()) == 2


def test_report_counts_lineage_by_step(runner):
    etl(runner, "run", SAMPLE_INPUT)
    etl(runner, "run", SAMPLE_INPUT)
    result = etl(runner, "report")
    assert result.exit_code == 0, result.output
    counts = {line.split()[0]: int(line.split()[1]) for line in result.output.splitlines()}
    assert counts == {"inserted": 5, "rejected": 2, "skipped": 6, "staged": 6, "unchanged": 1, "total": 20}
    only_second = {
        line.split()[0]: int(line.split()[1])
        for line in etl(runner, "report", "--run", 2).output.splitlines()
    }
    assert only_second == {"skipped": 6, "staged": 1, "unchanged": 1, "total": 8}


def test_watermark_show_set_reset_and_refusals(runner):
    assert "watermark events_ts: (none) (UTC)" in etl(runner, "watermark").output
    etl(runner, "run", SAMPLE_INPUT)
    shown = etl(runner, "watermark").output.splitlines()
    assert shown[0] == "watermark events_ts: 2025-01-15T12:00:00 (UTC)"
    assert "(none) → 2025-01-15T12:00:00  via pipeline (run 1)" in shown[1]
    # Setting asks first, showing how many rows lie at or after the new value.
    asked = etl(runner, "watermark", "--set", "2025-01-12T00:00:00+01:00", input="y\n")
    assert asked.exit_code == 0, asked.output
    assert (
        "3 target rows lie at or after the new value. Set the watermark to 2025-01-11T23:00:00?"
        in asked.output
    )
    assert "watermark events_ts: 2025-01-11T23:00:00 (UTC)" in asked.output
    declined = etl(runner, "watermark", "--reset", input="n\n")
    assert declined.exit_code != 0 and "Aborted" in declined.output
    assert "2025-01-11T23:00:00 (UTC)" in etl(runner, "watermark").output
    reset = etl(runner, "watermark", "--reset", "--yes")
    assert reset.exit_code == 0
    assert reset.output.splitlines()[0] == "watermark events_ts: (none) (UTC)"
    assert "2025-01-11T23:00:00 → (none)  via cli" in reset.output
    assert "is not a timestamp" in one_error_line(etl(runner, "watermark", "--set", "soon", "--yes"))
    assert "lies in the future" in one_error_line(
        etl(runner, "watermark", "--set", "2999-01-01T00:00:00", "--yes")
    )
    assert "either --set or --reset" in one_error_line(
        etl(runner, "watermark", "--set", "2025-01-01T00:00:00", "--reset")
    )


def test_reprocess_and_discard_dead_letters(runner, db):
    etl(runner, "run", SAMPLE_INPUT)
    ids = [r.id for r in fetch(db, "SELECT id FROM dead_letters ORDER BY pos")]
    result = etl(runner, "reprocess", ids[1])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["input_records"], summary["rejected"], summary["dead_letters"]) == (1, 1, 0)
    assert fetch(db, "SELECT status, attempts FROM dead_letters WHERE id = :i", i=ids[1]) == [("open", 1)]
    discarded = etl(runner, "discard", *ids, "--reason", "bad sample rows")
    assert discarded.exit_code == 0 and discarded.output.strip() == "discarded 2 dead letters"
    assert (
        fetch(db, "SELECT status, reason FROM dead_letters ORDER BY id")
        == [("discarded", "bad sample rows")] * 2
    )
    assert fetch(db, "SELECT actor FROM lineage WHERE step = 'discarded'") == [(f"cli:{os_user()}",)] * 2
    assert f"dead letter {ids[0]} is discarded" in one_error_line(etl(runner, "reprocess", ids[0]))
    assert "no dead letter 999" in one_error_line(etl(runner, "reprocess", 999))
    assert "no dead letter 999" in one_error_line(etl(runner, "discard", 999))


def test_errors_are_one_clear_line(runner, write, tmp_path):
    assert "no such file" in one_error_line(etl(runner, "run", tmp_path / "missing.json"))
    line = one_error_line(etl(runner, "run", write("bad.json", '[\n{"key": "a",}\n]')))
    assert line.startswith("Error: run 1 failed: invalid JSON at line 2, column 13")
    assert "does not start like JSON" in one_error_line(etl(runner, "run", write("x.csv", "key,name\n")))
    assert "--max-reject-rate" in usage_error(etl(runner, "run", SAMPLE_INPUT, "--max-reject-rate", "-1"))
    assert "is a directory" in usage_error(etl(runner, "run", tmp_path))
    assert "'x' is not a valid integer" in usage_error(etl(runner, "reprocess", "x"))
    assert "Missing argument" in usage_error(etl(runner, "discard"))


UNREACHABLE = ["sqlite:////nonexistent/dir/x.db", "postgresql://postgres@127.0.0.1:1/test", "not-a-database",
               "mysql://nobody@127.0.0.1/db", "this is not a url"]


@pytest.mark.parametrize("url", UNREACHABLE, ids=["sqlite", "postgresql", "sqlite-garbage-file", "no-driver",
                                                 "not-a-url"])
def test_an_unreachable_database_is_one_line(tmp_path, monkeypatch, url):
    if url == "not-a-database":
        garbage = tmp_path / "garbage.db"
        garbage.write_text("this is a text file, not a SQLite database\n" * 50)
        url = f"sqlite:///{garbage}"
    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": url,
            "SECRET_KEY": "test",
            "SLUICE_EMBEDDED_WORKER": False,
        }
    )
    runner = app.test_cli_runner()
    for args in (["runs"], ["report"], ["watermark"], ["run", str(SAMPLE_INPUT)], ["discard", "1"]):
        assert "the database is unreachable" in one_error_line(etl(runner, *args)), args
    page = app.test_client().get("/")
    assert page.status_code == 503 and b"Sluice cannot use its database" in page.data


def test_the_real_command_never_prints_a_traceback(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": UNREACHABLE[0],
        "SLUICE_INSTANCE_PATH": str(tmp_path / "instance"),
        "SLUICE_EMBEDDED_WORKER": "0",
    }
    done = subprocess.run(  # noqa: PLW1510 - the exit status is what the test checks
        [sys.executable, "-m", "flask", "--app", "app", "etl", "runs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the database is unreachable"), done.stderr


def test_the_real_command_runs_a_file(db_url, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "SLUICE_INSTANCE_PATH": str(tmp_path / "instance"),
        "SLUICE_EMBEDDED_WORKER": "0",
    }
    done = subprocess.run(  # noqa: PLW1510 - the exit status is what the test checks
        [sys.executable, "-m", "flask", "--app", "app", "etl", "run", str(SAMPLE_INPUT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["loaded"] == 5
