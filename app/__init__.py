"""Sluice: a small data warehouse with a web dashboard."""
import os
from datetime import timedelta

from flask import Flask
from sqlalchemy.exc import DBAPIError

from .config import defaults
from .database import configure_engine
from .extensions import csrf, db, migrate
from .pipeline import Settings
from .schema import MIGRATIONS, upgrade


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the Sluice app: config, database (migrated), blueprints, CLI."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    app = Flask(__name__, instance_relative_config=True, instance_path=os.environ.get("SLUICE_INSTANCE_PATH"),
                template_folder=os.path.join(root, "templates"), static_folder=os.path.join(root, "static"))
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(defaults(app.instance_path))
    if test_config:
        app.config.update(test_config)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))
    csrf.init_app(app)
    app.config["SLUICE_DB_ERROR"] = None
    with app.app_context():
        configure_engine(db.engine)
        try:
            upgrade(db.engine)
        except DBAPIError as exc:  # unreachable, refused, or not a database at all
            # Keep starting so the CLI and /healthz can say what is wrong in one line.
            app.config["SLUICE_DB_ERROR"] = str(exc.orig).strip().splitlines()[0]

    from . import cli, runs, web
    web.init_app(app)
    runs.init_app(app)
    cli.init_app(app)
    return app


def pipeline_settings(app: Flask) -> Settings:
    """The pipeline's limits from the app's configuration."""
    return Settings(
        max_decompressed_bytes=app.config["SLUICE_MAX_DECOMPRESSED_BYTES"],
        future_tolerance=timedelta(seconds=app.config["SLUICE_FUTURE_TOLERANCE_SECONDS"]),
        max_upload_bytes=app.config["MAX_CONTENT_LENGTH"],
    )
