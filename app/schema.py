"""Bring a database's schema up to date with the migrations, without needing a Flask app."""
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from .database import write_transaction

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """Alembic's configuration for Sluice's migrations folder."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration to the database behind `engine`."""
    config = alembic_config()
    # Under the write lock: several processes starting at once on a fresh database migrate one
    # after another instead of failing with "database is locked".
    with engine.connect() as conn, write_transaction(conn):
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
