import json

from app.pipeline import run_file

from .conftest import SAMPLE_INPUT, SAMPLE_SUMMARY


def test_sample_gives_the_seed_summary_then_skips_six(conn):
    expected = json.loads(SAMPLE_SUMMARY.read_text())
    summary = run_file(conn, SAMPLE_INPUT)
    assert {k: summary[k] for k in expected} == expected
    again = run_file(conn, SAMPLE_INPUT)
    assert (again["skipped"], again["staged"], again["unchanged"], again["loaded"]) == (6, 1, 1, 0)


def test_cli_run_prints_summary(runner, tmp_path):
    out = tmp_path / "summary.json"
    result = runner.invoke(args=["etl", "run", str(SAMPLE_INPUT), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["lineage_entries"] == 12
