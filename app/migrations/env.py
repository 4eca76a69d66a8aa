"""Alembic environment: a connection handed in by `app.schema.upgrade`, or Flask-Migrate's app."""
from alembic import context

from app.models import Base, include_name

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True, include_name=include_name)  # not the search index
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `flask db …` through Flask-Migrate
    from flask import current_app

    with current_app.extensions["migrate"].db.engine.connect() as conn:
        _run(conn)
        conn.commit()
