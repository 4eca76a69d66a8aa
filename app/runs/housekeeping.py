"""Housekeeping: remove stored uploads once every run of theirs ended longer than the retention ago."""
from datetime import UTC, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.engine import Engine

from ..database import write_transaction
from ..intake import intake_paths
from ..models import Run
from ..pipeline.validate import canonical, now_text, utc_now
from .store import UploadStore


def housekeep(engine: Engine, store: UploadStore, retention: timedelta, now=None) -> list[str]:
    """Remove stored uploads whose runs all ended longer than `retention` ago; return their paths."""
    cutoff = canonical((now or utc_now()) - retention)
    unfinished = func.sum(case((Run.finished_at.is_(None), 1), else_=0))
    # Only files this service stored: a `cli` run's file_path is the user's own file.
    ours = Run.file_path.startswith(store.prefix(), autoescape=True)
    with engine.connect() as conn:
        paths = conn.execute(
            select(Run.file_path).where(ours, Run.file_removed_at.is_(None))
            .group_by(Run.file_path)
            .having(unfinished == 0, func.max(Run.finished_at) < cutoff)).scalars().all()
        conn.rollback()
        removed = []
        for path in paths:
            # Checked again under the locks: a retry may have queued a run of this file meanwhile,
            # in `runs` or (SQLite) in the intake, where no run is recorded until the file is gone.
            with write_transaction(conn), intake_paths(engine) as waiting:
                busy = conn.execute(select(Run.id).where(
                    Run.file_path == path, Run.file_removed_at.is_(None),
                    (Run.finished_at.is_(None)) | (Run.finished_at >= cutoff)).limit(1)).first()
                if busy is not None or path in waiting or _modified_after(store, path, cutoff):
                    continue
                conn.execute(update(Run).where(Run.file_path == path, Run.file_removed_at.is_(None))
                             .values(file_removed_at=now_text()))
                store.remove(path)
            removed.append(path)
    return removed


def _modified_after(store: UploadStore, path: str, cutoff: str) -> bool:
    """Whether a stored file was written after `cutoff` (uploaded again, its run not recorded yet)."""
    written = store.modified_at(path)
    return written is not None and canonical(written.astimezone(UTC).replace(tzinfo=None)) >= cutoff
