"""Datasets on the command line (SPEC §7, §10): `etl datasets`, `etl dataset create|propose|evolve|archive|show`,
and `--dataset` on every etl command; errors are one line and a non-zero exit."""
import json
import uuid

import pytest

from .conftest import SAMPLE_INPUT
from .test_cli import etl, one_error_line

ORDERS = [
    {"order_id": f"o{i:03d}", "customer": f"c{i}", "total": i * 1.5, "updated_at": f"2025-02-{i:02d}T10:00:00Z"}
    for i in range(1, 11)
]
BAD = {"order_id": "o900", "customer": "x", "total": "lots", "updated_at": "2025-02-01T00:00:00Z"}


@pytest.fixture
def name():
    """A dataset name of this test's own (PostgreSQL keeps the catalogue between tests)."""
    return f"orders_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sample(write):
    """Good records, to propose a shape from."""
    return write("sample.jsonl", "\n".join(json.dumps(r) for r in ORDERS) + "\n")


@pytest.fixture
def orders(write):
    """The good records and a bad one, to load."""
    return write("orders.jsonl", "\n".join(json.dumps(r) for r in [*ORDERS, BAD]) + "\n")


@pytest.fixture
def dataset(runner, write, sample, name):
    """A dataset made the way the README says: propose from the sample, then create from its output."""
    proposed = etl(runner, "dataset", "propose", sample)
    assert proposed.exit_code == 0, proposed.output
    shape = write("shape.json", proposed.stdout)
    created = etl(runner, "dataset", "create", name, "--shape", shape, "--title", "Orders")
    assert created.exit_code == 0, created.output
    return name


def test_propose_prints_a_shape_that_create_takes_unchanged(runner, write, sample, name):
    proposed = etl(runner, "dataset", "propose", sample)
    assert proposed.exit_code == 0
    shape = json.loads(proposed.stdout)  # standard output is the shape alone
    assert shape["key"] == "order_id" and shape["version"] == "updated_at"
    assert "read 10 records" in proposed.stderr and "note:" in proposed.stderr
    created = etl(runner, "dataset", "create", name, "--shape", write("s.json", proposed.stdout),
                  "--title", "Orders", "--description", "From the shop")
    assert created.exit_code == 0 and f"created dataset {name} (table ds_{name}" in created.output
    shown = etl(runner, "dataset", "show", name)
    assert shown.exit_code == 0
    assert f"dataset {name} (Orders): version 1, table ds_{name}" in shown.output
    assert "From the shop" in shown.output and "order_id" in shown.output and "created" in shown.output


def test_run_and_every_command_work_on_the_named_dataset(runner, dataset, orders, tmp_path):
    out = tmp_path / "summary.json"
    ran = etl(runner, "run", orders, "--dataset", dataset, "--output", out)
    assert ran.exit_code == 0, ran.output
    summary = json.loads(out.read_text())
    assert summary["dataset"] == dataset and summary["inserted"] == 10 and summary["rejected"] == 1

    runs = etl(runner, "runs", "--dataset", dataset)
    assert runs.exit_code == 0 and "orders.jsonl" in runs.output
    assert "orders.jsonl" not in etl(runner, "runs").output  # events has no such run

    report = etl(runner, "report", "--dataset", dataset)
    assert report.output.split() == ["inserted", "10", "rejected", "1", "staged", "10", "total", "21"]
    assert etl(runner, "report").output.split() == ["total", "0"]

    mark = etl(runner, "watermark", "--dataset", dataset)
    assert f"watermark {dataset}_updated_at: 2025-02-10T10:00:00 (UTC)" in mark.output
    moved = etl(runner, "watermark", "--dataset", dataset, "--set", "2025-02-05T00:00:00Z", "--yes")
    assert moved.exit_code == 0 and "2025-02-05T00:00:00 (UTC)" in moved.output
    assert "watermark events_ts: (none)" in etl(runner, "watermark").output

    listed = etl(runner, "datasets")
    assert listed.exit_code == 0
    (line,) = [x for x in listed.output.splitlines() if x.startswith(dataset + " ")]
    assert line.split() == [dataset, "1", "10", "1", "2025-02-05T00:00:00"]
    assert listed.output.splitlines()[1].startswith("events ")


def test_reprocess_and_discard_check_the_dataset_of_their_ids(loaded, runner, dataset, orders):
    etl(runner, "run", orders, "--dataset", dataset)
    from app.extensions import db

    with loaded.app_context(), db.engine.connect() as conn:
        ids = dict(conn.exec_driver_sql("SELECT dataset, max(id) FROM dead_letters GROUP BY dataset").all())
    ours, events = ids[dataset], ids["events"]
    line = one_error_line(etl(runner, "discard", events, "--dataset", dataset))
    assert f"dead letter {events} belongs to dataset 'events', not '{dataset}'" in line
    assert f"belongs to dataset '{dataset}'" in one_error_line(etl(runner, "reprocess", ours, "--dataset", "events"))
    assert "no dataset" in one_error_line(etl(runner, "discard", ours, "--dataset", "nope")).lower()
    done = etl(runner, "discard", ours, "--dataset", dataset, "--reason", "test")
    assert done.exit_code == 0 and "discarded 1 dead letter" in done.output


def test_evolve_and_archive(runner, write, dataset):
    proposed = {"key": "order_id", "version": "updated_at", "fields": [
        {"name": "customer", "type": "string", "required": True},
        {"name": "total", "type": "number", "required": True},
        {"name": "note", "type": "string"}]}
    evolved = etl(runner, "dataset", "evolve", dataset, "--shape", write("s2.json", json.dumps(proposed)),
                  "--title", "Sales")
    assert evolved.exit_code == 0, evolved.output
    assert f"dataset {dataset} is now at version 2:" in evolved.output and "note" in evolved.output
    assert "nothing changed" in etl(runner, "dataset", "evolve", dataset, "--title", "Sales").output
    retyped = {**proposed, "fields": [{"name": "customer", "type": "integer", "required": True}, *proposed["fields"][1:]]}
    line = one_error_line(etl(runner, "dataset", "evolve", dataset, "--shape", write("s3.json", json.dumps(retyped))))
    assert "customer" in line and "new dataset" in line

    archived = etl(runner, "dataset", "archive", dataset)
    assert archived.exit_code == 0 and f"archived dataset {dataset}" in archived.output
    assert "archived" in one_error_line(etl(runner, "run", SAMPLE_INPUT, "--dataset", dataset))
    assert "archived" in one_error_line(etl(runner, "watermark", "--dataset", dataset, "--reset", "--yes"))
    assert "archived" in one_error_line(etl(runner, "dataset", "archive", dataset))
    assert "archived" in etl(runner, "dataset", "show", dataset).output
    assert "cannot be archived" in one_error_line(etl(runner, "dataset", "archive", "events"))


@pytest.mark.parametrize("args", [
    ("run", SAMPLE_INPUT, "--dataset", "nope"), ("runs", "--dataset", "nope"), ("report", "--dataset", "nope"),
    ("watermark", "--dataset", "nope"), ("reprocess", "1", "--dataset", "nope"), ("discard", "1", "--dataset", "nope"),
    ("dataset", "show", "nope"), ("dataset", "archive", "nope"), ("dataset", "evolve", "nope", "--title", "x"),
])
def test_an_unknown_dataset_is_one_line(runner, args):
    assert "no dataset 'nope'" in one_error_line(etl(runner, *args))


def test_create_and_propose_errors_are_one_line(runner, write, dataset):
    shape = write("shape.json", json.dumps({"key": "k", "version": "v", "fields": [{"name": "k", "type": "string"}]}))
    assert "k" in one_error_line(etl(runner, "dataset", "create", "fresh_one", "--shape", shape))
    good = write("good.json", json.dumps({"key": "k", "version": "v", "fields": []}))
    assert "not a valid dataset name" in one_error_line(etl(runner, "dataset", "create", "Bad-Name", "--shape", good))
    assert "exists already" in one_error_line(etl(runner, "dataset", "create", dataset, "--shape", good))
    assert "not a JSON shape" in one_error_line(etl(runner, "dataset", "create", "x1", "--shape",
                                                    write("bad.json", "{nope")))
    assert "does not start like JSON" in one_error_line(etl(runner, "dataset", "propose", write("n.json", "hello")))
    assert "nums.json" in one_error_line(etl(runner, "dataset", "propose", write("nums.json", "[1, 2, 3]")))
