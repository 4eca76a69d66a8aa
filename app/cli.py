"""`flask --app app etl …`: run files, list runs, report lineage, manage the watermark, dead letters and datasets.

Every command works on one dataset, `--dataset NAME` (default events); `etl datasets` lists them and
`etl dataset …` creates, proposes, evolves, archives and shows one.
"""
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from . import queries
from .accounts.actor import cli_actor
from .config import pipeline_settings
from .datasets.propose import propose_shape
from .datasets.registry import (
    DEFAULT,
    archive_dataset,
    create_dataset,
    evolve_dataset,
    get_dataset,
    shape_versions,
)
from .datasets.shape import ShapeError
from .extensions import db
from .intake import pending_runs
from .models import DeadLetter, Lineage, Run
from .pipeline import DeadLetterError, InputError, Options, RunFailed, WatermarkError
from .pipeline import discard as discard_dl
from .pipeline import watermark as wm
from .pipeline.extract import Reader
from .runs import current_service

etl = AppGroup("etl", help="Run the pipeline and manage what it wrote.")
PROPOSE_RECORDS = 10_000


def dataset_option(default: str | None = DEFAULT, help: str = "The dataset (default events)."):
    """The `--dataset NAME` option of a command."""
    return click.option("--dataset", "dataset", default=default, metavar="NAME", show_default=False, help=help)


def _usable_database() -> None:
    error = current_app.config.get("SLUICE_DB_ERROR")
    if error:
        raise click.ClickException(f"the database is unreachable: {error}")


def _connection():
    _usable_database()
    return db.engine.connect()


def _service():
    _usable_database()
    return current_service()


def _guard(fn):
    """Turn every expected failure into one clear line and a non-zero exit, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except RunFailed as exc:
            raise click.ClickException(f"run {exc.run_id} failed: {exc}") from None
        except (DeadLetterError, WatermarkError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        except SQLAlchemyError as exc:
            message = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
            raise click.ClickException(f"database error: {message}") from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
        except Exception as exc:  # a bug: still one line for the user, the details in the log
            current_app.logger.exception("etl command failed")
            raise click.ClickException(f"unexpected error: {type(exc).__name__}: {exc}".splitlines()[0]) from None

    return wrapper


@etl.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--output", type=click.Path(dir_okay=False, writable=True), help="Write the summary JSON here.")
@click.option("--ignore-watermark", is_flag=True, help="Backfill: load records older than the watermark.")
@click.option("--max-reject-rate", type=click.FloatRange(0, 1), help="Fail the run when a larger share is rejected.")
@click.option("--dry-run", is_flag=True, help="Compute and report everything, keep nothing but the run's record.")
@dataset_option(help="The dataset to load into (default events).")
@_guard
def run_command(file, output, ignore_watermark, max_reject_rate, dry_run, dataset):
    """Run the pipeline on FILE and print the summary."""

    if not Path(file).is_file():
        raise click.ClickException(f"no such file: {file}")
    options = Options(ignore_watermark=ignore_watermark, max_reject_rate=max_reject_rate, dry_run=dry_run)
    service = _service()
    service.recover()  # a run of a killed `etl run` is marked interrupted, as a worker's would be
    summary = service.run_file(file, options=options, dataset=dataset, actor=cli_actor())
    text = json.dumps(summary, indent=2)
    if output:
        Path(output).write_text(text + "\n")
    click.echo(text)


@etl.command("runs")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@dataset_option()
@_guard
def runs_command(limit, dataset):
    """List a dataset's run history, newest first."""
    with _connection() as conn:
        ds = get_dataset(conn, dataset)
        current_service().recover()
        rows = conn.execute(select(Run).where(Run.dataset == ds.name).order_by(Run.id.desc()).limit(limit)).all()
        # Runs accepted while SQLite's write lock was held wait in the intake until a worker claims them.
        waiting = [SimpleNamespace(**r) for r in pending_runs(conn, dataset=ds.name)]
        rows = sorted([*rows, *waiting], key=lambda r: r.id, reverse=True)[:limit]
    click.echo(f"{'id':>6}  {'kind':<9} {'status':<9} {'queued (UTC)':<19}  {'input':>9} {'loaded':>9} "
               f"{'rejected':>9} {'skipped':>9}  source")
    for r in rows:
        click.echo(f"{r.id:>6}  {r.kind:<9} {r.status:<9} {r.queued_at[:19]:<19}  {r.input_records:>9} "
                   f"{r.inserted + r.updated:>9} {r.rejected:>9} {r.skipped:>9}  {r.source_name or ''}"
                   + (f"  ({r.error})" if r.error else ""))


@etl.command("report")
@click.option("--run", "run_id", type=int, help="Only this run's lineage.")
@dataset_option()
@_guard
def report_command(run_id, dataset):
    """Print a dataset's lineage counts grouped by step."""
    query = select(Lineage.step, func.count()).group_by(Lineage.step).order_by(Lineage.step)
    if run_id is not None:
        query = query.where(Lineage.run_id == run_id)
    with _connection() as conn:
        ds = get_dataset(conn, dataset)
        rows = conn.execute(query.where(Lineage.dataset == ds.name)).all()
    for step, n in rows:
        click.echo(f"{step:<12} {n:>10}")
    click.echo(f"{'total':<12} {sum(n for _, n in rows):>10}")


@etl.command("watermark")
@click.option("--set", "new_value", metavar="TS", help="Set the watermark to this timestamp.")
@click.option("--reset", is_flag=True, help="Remove the watermark: the next run processes everything.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@dataset_option()
@_guard
def watermark_command(new_value, reset, yes, dataset):
    """Show a dataset's watermark and its history; set or reset it."""
    if new_value and reset:
        raise click.ClickException("use either --set or --reset")
    with _connection() as conn:
        ds = get_dataset(conn, dataset)
        if new_value or reset:
            if ds.archived:
                raise click.ClickException(f"dataset {ds.name!r} is archived: its watermark no longer changes")
            with conn.begin():
                count = wm.preview(conn, None if reset else new_value, ds)
            what = "reset the watermark" if reset else f"set the watermark to {wm.check_value(new_value)}"
            if not yes:
                click.confirm(f"{count} target rows lie at or after the new value. {what[0].upper()}{what[1:]}?",
                              abort=True)
            if reset:
                wm.reset(conn, via="cli", actor=cli_actor(), dataset=ds)
            else:
                wm.set_value(conn, new_value, via="cli", actor=cli_actor(), dataset=ds)
        with conn.begin():
            value = wm.current(conn, ds.watermark)
            changes = wm.history(conn, ds, limit=10)
    click.echo(f"watermark {ds.watermark}: {value or '(none)'} (UTC)")
    for h in changes:
        click.echo(f"  {h['at'][:19]}  {h['old_value'] or '(none)'} → {h['new_value'] or '(none)'}  via {h['via']}"
                   + (f" (run {h['run_id']})" if h["run_id"] else "") + (f" by {h['actor']}" if h["actor"] else ""))


@etl.command("reprocess")
@click.argument("ids", nargs=-1, type=int, required=True)
@dataset_option(None, help="Refuse unless every dead letter belongs to this dataset.")
@_guard
def reprocess_command(ids, dataset):
    """Retry open dead letters by id (one run of kind `reprocess`, in their dataset)."""
    _check_owner(ids, dataset)
    try:
        summary = _service().reprocess(list(ids), actor=cli_actor())
    except RunFailed as exc:
        raise click.ClickException(f"reprocess run {exc.run_id} failed: {exc}") from None
    click.echo(json.dumps(summary, indent=2))


@etl.command("discard")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--reason", help="Why they are discarded.")
@dataset_option(None, help="Refuse unless every dead letter belongs to this dataset.")
@_guard
def discard_command(ids, reason, dataset):
    """Discard open dead letters by id."""
    _check_owner(ids, dataset)
    with _connection() as conn:
        n = discard_dl(conn, list(ids), reason=reason, actor=cli_actor())
    click.echo(f"discarded {n} dead letter{'s' if n != 1 else ''}")


def _check_owner(ids, dataset: str | None) -> None:
    """Refuse dead letters of another dataset than `--dataset` (when given), naming the first."""
    if dataset is None:
        return
    with _connection() as conn:
        ds = get_dataset(conn, dataset)
        found = dict(conn.execute(select(DeadLetter.id, DeadLetter.dataset)
                                  .where(DeadLetter.id.in_(list(ids)[:10_000]))).all())
    for i in ids:
        if i in found and found[i] != ds.name:
            raise click.ClickException(f"dead letter {i} belongs to dataset {found[i]!r}, not {ds.name!r}")


# --- datasets --------------------------------------------------------------------------------------

@etl.command("datasets")
@_guard
def datasets_command():
    """List every dataset: name, shape version, rows, open dead letters, watermark, archived."""
    with _connection() as conn, conn.begin():
        rows = queries.datasets_overview(conn)
    click.echo(f"{'name':<40} {'version':>7} {'rows':>12} {'open dl':>9}  {'watermark (UTC)':<26}  archived")
    for r in rows:
        click.echo(f"{r['name']:<40} {r['dataset'].version:>7} {r['target_rows']:>12} {r['open_dead_letters']:>9}  "
                   f"{r['watermark'] or '(none)':<26}  {(r['archived_at'] or '')[:19]}".rstrip())


dataset_group = AppGroup("dataset", help="Create, propose, evolve, archive and show a dataset.")
etl.add_command(dataset_group)


def _shape_file(path: str) -> dict:
    """The plain JSON shape in a file (as `etl dataset propose` prints it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.ClickException(f"{path}: not a JSON shape ({exc})") from None


def _show(name: str) -> None:
    with _connection() as conn:
        ds = get_dataset(conn, name)
        with conn.begin():
            numbers = next(d for d in queries.datasets_overview(conn) if d["name"] == ds.name)
        versions = shape_versions(conn, ds.name)
    click.echo(f"dataset {ds.name}" + (f" ({ds.title})" if ds.title else "") + f": version {ds.version}, table "
               f"{ds.table.name}, watermark {ds.watermark} = {numbers['watermark'] or '(none)'}"
               + (f", archived {ds.archived_at[:19]}" if ds.archived_at else ""))
    if ds.description:
        click.echo(ds.description)
    click.echo(f"{numbers['target_rows']} rows, {numbers['open_dead_letters']} open dead letters")
    click.echo(f"  {ds.shape.key:<40} string (key, required, max_length 256)")
    for f in ds.shape.fields:
        extra = [x for x, on in (("required", f.required), (f"max_length {f.max_length}", f.type == "string"),
                                 ("sortable", f.sortable), ("searchable", f.searchable)) if on]
        click.echo(f"  {f.name:<40} {f.type}" + (f" ({', '.join(extra)})" if extra else ""))
    click.echo(f"  {ds.shape.version:<40} timestamp (version, required)")
    click.echo("versions:")
    for v in versions:
        click.echo(f"  {v['version']:>3}  {v['at'][:19]}  {v['actor'] or ''}  {'; '.join(v['changes'])}")


@dataset_group.command("create")
@click.argument("name")
@click.option("--shape", "shape_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The shape as JSON (as `etl dataset propose` prints it).")
@click.option("--title", default="", help="A title.")
@click.option("--description", default="", help="A description.")
@_guard
def dataset_create_command(name, shape_path, title, description):
    """Create dataset NAME, with its empty table, from a shape file."""
    shape = _shape_file(shape_path)
    with _connection() as conn:
        ds = create_dataset(conn, name, shape, title=title, description=description, actor=cli_actor())
    click.echo(f"created dataset {ds.name} (table {ds.table.name}, watermark {ds.watermark})")


@dataset_group.command("propose")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@_guard
def dataset_propose_command(file):
    """Propose a shape from FILE's first records (at most 10,000): JSON on standard output, notes on stderr."""
    settings = pipeline_settings(current_app.config)
    try:
        with open(file, "rb") as f:
            reader = Reader(f, settings.max_decompressed_bytes, settings.max_upload_bytes,
                            max_record=settings.max_record_bytes)
            proposal = propose_shape(itertools.islice(iter(reader), PROPOSE_RECORDS))
    except (InputError, ShapeError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    click.echo(json.dumps(proposal["shape"], indent=2, ensure_ascii=False))
    click.echo(f"read {proposal['records_read']} records of {file}", err=True)
    for note in proposal["notes"]:
        click.echo(f"note: {note}", err=True)


@dataset_group.command("evolve")
@click.argument("name")
@click.option("--shape", "shape_path", type=click.Path(dir_okay=False, exists=True),
              help="The new shape as JSON (allowed changes only).")
@click.option("--title", default=None, help="A new title.")
@click.option("--description", default=None, help="A new description.")
@_guard
def dataset_evolve_command(name, shape_path, title, description):
    """Change dataset NAME's shape, title or description: a new version, allowed changes only."""
    shape = _shape_file(shape_path) if shape_path else None
    with _connection() as conn:
        before = get_dataset(conn, name)
        ds = evolve_dataset(conn, name, shape=shape, title=title, description=description, actor=cli_actor())
        changes = shape_versions(conn, name)[0]["changes"] if ds.version != before.version else []
    if not changes:
        click.echo(f"dataset {name}: nothing changed (version {ds.version})")
        return
    click.echo(f"dataset {name} is now at version {ds.version}:")
    for change in changes:
        click.echo(f"  {change}")


@dataset_group.command("archive")
@click.argument("name")
@_guard
def dataset_archive_command(name):
    """Archive dataset NAME: it takes no new runs; its data stays readable."""
    with _connection() as conn:
        ds = archive_dataset(conn, name, actor=cli_actor())
    click.echo(f"archived dataset {ds.name} at {ds.archived_at[:19]} (UTC)")


@dataset_group.command("show")
@click.argument("name")
@_guard
def dataset_show_command(name):
    """Show dataset NAME: its shape, numbers and versions."""
    _show(name)


def _queue_executor():
    """The app's queue executor; a one-line error under the embedded executor, which has no queue."""
    executor = _service().executor
    if not hasattr(executor, "waiting_jobs"):  # not a QueueExecutor, whose module needs procrastinate
        raise click.ClickException("there is no queue: SLUICE_EXECUTOR is embedded, so runs are executed inside "
                                   "the web process; set SLUICE_EXECUTOR=queue (with PostgreSQL) for workers")
    return executor


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="How many runs this host reads at the same time (one process each).")
@_guard
def worker_command(concurrency):
    """Execute queued runs from the task queue (SLUICE_EXECUTOR=queue), until stopped."""
    from .runs.taskqueue import run_workers

    executor = _queue_executor()
    click.echo(f"Sluice worker: executing queued runs with {concurrency} process(es); Ctrl+C stops "
               "after the run at hand.")
    sys.exit(run_workers(concurrency, executor.work))


@click.command("queue")
@_guard
def queue_command():
    """Show the task queue (SLUICE_EXECUTOR=queue): live workers, jobs waiting, runs queued and running."""
    executor = _queue_executor()
    with _connection() as conn:
        counts = dict(conn.execute(select(Run.status, func.count()).where(
            Run.status.in_(("queued", "running"))).group_by(Run.status)).all())
    click.echo(f"workers alive: {executor.workers()}")
    click.echo(f"jobs waiting for a worker: {executor.waiting_jobs()}")
    click.echo(f"runs queued: {counts.get('queued', 0)}, running: {counts.get('running', 0)}")


def init_app(app) -> None:
    """Register the `etl`, `users` and `tokens` command groups and the `worker` command."""
    from .cli_accounts import tokens, users

    app.cli.add_command(worker_command)
    app.cli.add_command(queue_command)
    app.cli.add_command(etl)
    app.cli.add_command(users)
    app.cli.add_command(tokens)
