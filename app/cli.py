"""`flask --app app etl …`: run files, list runs, report lineage, manage the watermark and dead letters."""
import json
from pathlib import Path
from types import SimpleNamespace

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db
from .intake import pending_runs
from .models import Lineage, Run
from .pipeline import DeadLetterError, Options, RunFailed, WatermarkError
from .pipeline import discard as discard_dl
from .pipeline import watermark as wm
from .runs import current_service

etl = AppGroup("etl", help="Run the pipeline and manage what it wrote.")


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
@_guard
def run_command(file, output, ignore_watermark, max_reject_rate, dry_run):
    """Run the pipeline on FILE and print the summary."""

    if not Path(file).is_file():
        raise click.ClickException(f"no such file: {file}")
    options = Options(ignore_watermark=ignore_watermark, max_reject_rate=max_reject_rate, dry_run=dry_run)
    service = _service()
    service.recover()  # a run of a killed `etl run` is marked interrupted, as a worker's would be
    summary = service.run_file(file, options=options)
    text = json.dumps(summary, indent=2)
    if output:
        Path(output).write_text(text + "\n")
    click.echo(text)


@etl.command("runs")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@_guard
def runs_command(limit):
    """List the run history, newest first."""
    with _connection() as conn:
        current_service().recover()
        rows = conn.execute(select(Run).order_by(Run.id.desc()).limit(limit)).all()
        # Runs accepted while SQLite's write lock was held wait in the intake until a worker claims them.
        waiting = [SimpleNamespace(**r) for r in pending_runs(conn)]
        rows = sorted([*rows, *waiting], key=lambda r: r.id, reverse=True)[:limit]
    click.echo(f"{'id':>6}  {'kind':<9} {'status':<9} {'queued (UTC)':<19}  {'input':>9} {'loaded':>9} "
               f"{'rejected':>9} {'skipped':>9}  source")
    for r in rows:
        click.echo(f"{r.id:>6}  {r.kind:<9} {r.status:<9} {r.queued_at[:19]:<19}  {r.input_records:>9} "
                   f"{r.inserted + r.updated:>9} {r.rejected:>9} {r.skipped:>9}  {r.source_name or ''}"
                   + (f"  ({r.error})" if r.error else ""))


@etl.command("report")
@click.option("--run", "run_id", type=int, help="Only this run's lineage.")
@_guard
def report_command(run_id):
    """Print lineage counts grouped by step."""
    query = select(Lineage.step, func.count()).group_by(Lineage.step).order_by(Lineage.step)
    if run_id is not None:
        query = query.where(Lineage.run_id == run_id)
    with _connection() as conn:
        rows = conn.execute(query).all()
    for step, n in rows:
        click.echo(f"{step:<12} {n:>10}")
    click.echo(f"{'total':<12} {sum(n for _, n in rows):>10}")


@etl.command("watermark")
@click.option("--set", "new_value", metavar="TS", help="Set the watermark to this timestamp.")
@click.option("--reset", is_flag=True, help="Remove the watermark: the next run processes everything.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_guard
def watermark_command(new_value, reset, yes):
    """Show the watermark and its history; set or reset it."""
    if new_value and reset:
        raise click.ClickException("use either --set or --reset")
    with _connection() as conn:
        if new_value or reset:
            with conn.begin():
                count = wm.preview(conn, None if reset else new_value)
            what = "reset the watermark" if reset else f"set the watermark to {wm.check_value(new_value)}"
            if not yes:
                click.confirm(f"{count} target rows lie at or after the new value. {what[0].upper()}{what[1:]}?",
                              abort=True)
            if reset:
                wm.reset(conn, via="cli")
            else:
                wm.set_value(conn, new_value, via="cli")
        with conn.begin():
            value = wm.current(conn)
            changes = wm.history(conn, limit=10)
    click.echo(f"watermark {wm.NAME}: {value or '(none)'} (UTC)")
    for h in changes:
        click.echo(f"  {h['at'][:19]}  {h['old_value'] or '(none)'} → {h['new_value'] or '(none)'}  via {h['via']}"
                   + (f" (run {h['run_id']})" if h["run_id"] else ""))


@etl.command("reprocess")
@click.argument("ids", nargs=-1, type=int, required=True)
@_guard
def reprocess_command(ids):
    """Retry open dead letters by id (one run of kind `reprocess`)."""

    try:
        summary = _service().reprocess(list(ids))
    except RunFailed as exc:
        raise click.ClickException(f"reprocess run {exc.run_id} failed: {exc}") from None
    click.echo(json.dumps(summary, indent=2))


@etl.command("discard")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--reason", help="Why they are discarded.")
@_guard
def discard_command(ids, reason):
    """Discard open dead letters by id."""
    with _connection() as conn:
        n = discard_dl(conn, list(ids), reason=reason, actor="cli")
    click.echo(f"discarded {n} dead letter{'s' if n != 1 else ''}")


def init_app(app) -> None:
    """Register the `etl` command group."""
    app.cli.add_command(etl)
