"""The read side for pages and API: headline numbers, keyset pages, lineage of a key. No Flask here."""
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from .models import DeadLetter, Run, Watermark
from .pipeline.watermark import NAME as WATERMARK


def overview(conn: Connection) -> dict:
    """Headline numbers (target rows, open dead letters, watermark) and the latest runs."""
    # Rows are only ever added to the target by applied runs, so their inserted counts add up to
    # the row count: an aggregate over the small runs table instead of counting millions of rows.
    target_rows = conn.execute(select(func.coalesce(func.sum(Run.inserted), 0))
                               .where(Run.applied_seq.is_not(None))).scalar()
    open_dead_letters = conn.execute(select(func.count()).select_from(DeadLetter)
                                     .where(DeadLetter.status == "open")).scalar()
    watermark = conn.execute(select(Watermark.value).where(Watermark.name == WATERMARK)).scalar()
    latest_runs = conn.execute(select(Run).order_by(Run.id.desc()).limit(10)).all()
    return {"target_rows": target_rows, "open_dead_letters": open_dead_letters, "watermark": watermark,
            "latest_runs": latest_runs}
