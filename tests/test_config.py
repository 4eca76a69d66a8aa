"""Settings from the environment: a mistyped one stops Sluice with one line naming it, never a traceback."""
import os
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.parametrize(("name", "value"), [("SLUICE_MAX_UPLOAD_BYTES", "1GB"),
                                             ("SLUICE_FILE_RETENTION_HOURS", "-3"),
                                             ("SLUICE_PROGRESS_INTERVAL", "fast"),
                                             ("SLUICE_EXECUTOR", "celery")])
def test_a_mistyped_setting_is_one_line_naming_it(name, value, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True})
    assert str(stopped.value).startswith(f"Sluice cannot start: {name} must be")
    assert repr(value) in str(stopped.value)


def test_the_command_line_prints_that_line_and_no_traceback(tmp_path):
    env = {**os.environ, "SLUICE_INSTANCE_PATH": str(tmp_path), "SLUICE_MAX_RECORD_BYTES": "16MiB"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "etl", "runs"], check=False, cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Sluice cannot start: SLUICE_MAX_RECORD_BYTES must be a whole number of at least 0, not '16MiB'")


def test_the_queue_executor_on_sqlite_stops_the_start_saying_it_needs_postgresql(tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("SLUICE_EXECUTOR", "queue")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True})
    assert str(stopped.value).startswith("Sluice cannot start: SLUICE_EXECUTOR=queue needs PostgreSQL")


@pytest.mark.parametrize("executor", ["embedded"])  # also when the suite runs with TEST_EXECUTOR=queue
def test_worker_and_queue_commands_say_there_is_no_queue_with_the_embedded_executor(runner):
    for command in (["worker"], ["queue"]):
        result = runner.invoke(args=command)
        assert result.exit_code == 1, command
        assert "SLUICE_EXECUTOR" in result.output and "embedded" in result.output
