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


def test_propose_piped_into_create_makes_a_dataset_that_takes_the_sample(app, engine, env, tmp_path):  # noqa: F811
    """`etl dataset propose FILE > shape.json && etl dataset create NAME --shape shape.json`, as a shell does it."""
    import json
    import uuid

    flask = [sys.executable, "-m", "flask", "--app", "app", "etl"]
    sample = tmp_path / "orders.jsonl"
    sample.write_text("".join(json.dumps({"order_id": f"o{i}", "total": i, "at": f"2025-03-0{i}T00:00:00Z"}) + "\n"
                              for i in range(1, 6)))
    name = f"orders_{uuid.uuid4().hex[:8]}"
    shape = tmp_path / "shape.json"
    with shape.open("w") as out:
        proposed = subprocess.run(flask + ["dataset", "propose", str(sample)], env=env, cwd=ROOT, stdout=out,
                                  stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert proposed.returncode == 0, proposed.stderr
    assert "note:" in proposed.stderr and json.loads(shape.read_text())["key"] == "order_id"
    for args in (["dataset", "create", name, "--shape", str(shape)], ["run", str(sample), "--dataset", name]):
        done = subprocess.run(flask + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inserted"] == 5
    assert rows(engine, f"SELECT count(*) FROM ds_{name}") == [(5,)]
