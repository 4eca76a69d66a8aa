"""`flask etl run` in a real process: killed mid-run, its run is marked interrupted and nothing changed."""
import signal
import subprocess
import sys

import pytest

from .test_run_processes import ROOT, env, make_records, rows, run_of, snapshot, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def test_a_killed_cli_run_is_marked_interrupted_by_the_next_command(app, engine, env, tmp_path):  # noqa: F811
    flask = [sys.executable, "-m", "flask", "--app", "app", "etl"]
    small = make_records(tmp_path / "small.json", 500, seed=5)
    done = subprocess.run(flask + ["run", str(small)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    before = snapshot(engine)
    big = make_records(tmp_path / "big.json", 80_000, seed=6, start="2024-01-02T00:00:00")
    child = subprocess.Popen(flask + ["run", str(big)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: rows(engine, "SELECT status FROM runs WHERE id = 2") == [("running",)],
                 "the CLI run to start")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert run_of(engine, 2).status == "running"  # nobody has looked yet
    listing = subprocess.run(flask + ["runs"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                             check=False)
    assert listing.returncode == 0, listing.stderr
    run = run_of(engine, 2)
    assert (run.status, run.error) == ("failed", "interrupted")
    assert "interrupted" in listing.stdout
    assert snapshot(engine) == before
