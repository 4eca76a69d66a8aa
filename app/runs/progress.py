"""Where a running run's live progress is kept: files in the instance folder, or a table every host reads.

On SQLite (one host) a file per run: writing it never waits for the database's single write lock,
which another run's apply may hold for minutes. On PostgreSQL a row per run in `run_progress`,
so that a page served by any host shows the progress of a run executed by any other; the write
takes no apply lock and so never waits for an apply either.
"""
import json
import os
import tempfile
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from ..database import write_transaction
from ..models import RunProgress
from ..pipeline.validate import now_text


class FileBoard:
    """Progress as one JSON file per running run in a folder of this host."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, run_id: int) -> Path:
        """Where a running run's progress file is."""
        return self.folder / f"{int(run_id)}.json"

    def write(self, run_id: int, data: dict) -> None:
        """Replace the run's progress with `data`."""
        write_json_atomically(self.path(run_id), data)

    def read(self, run_id: int) -> dict | None:
        """The run's progress, or None."""
        try:
            return json.loads(self.path(run_id).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def clear(self, run_id: int) -> None:
        """Forget the run's progress (it ended)."""
        self.path(run_id).unlink(missing_ok=True)


class TableBoard:
    """Progress as one row per running run in `run_progress`, for every host to read."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def write(self, run_id: int, data: dict) -> None:
        """Replace the run's progress with `data`."""
        text = json.dumps(data)
        stmt = pg_insert(RunProgress).values(run_id=run_id, data=text, updated_at=now_text())
        stmt = stmt.on_conflict_do_update(index_elements=[RunProgress.run_id],
                                          set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at})
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            conn.execute(stmt)

    def read(self, run_id: int) -> dict | None:
        """The run's progress, or None."""
        with self.engine.connect() as conn:
            text = conn.execute(select(RunProgress.data).where(RunProgress.run_id == run_id)).scalar()
            conn.rollback()
        return json.loads(text) if text else None

    def clear(self, run_id: int) -> None:
        """Forget the run's progress (it ended)."""
        with self.engine.connect() as conn, write_transaction(conn, apply_lock=False):
            conn.execute(delete(RunProgress).where(RunProgress.run_id == run_id))


def board_for(engine: Engine, folder: str | Path) -> FileBoard | TableBoard:
    """The progress board of a database: a table on PostgreSQL, files in `folder` otherwise."""
    return TableBoard(engine) if engine.dialect.name == "postgresql" else FileBoard(folder)


def write_json_atomically(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON so that a reader sees the old or the new file, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
