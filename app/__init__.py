"""Sluice: a small data warehouse with a web dashboard."""
import os

from flask import Flask
from sqlalchemy.exc import DBAPIError

from .accounts.setup import announce_setup
from .config import ConfigError, database_url_problem, defaults, redact
from .database import configure_engine
from .extensions import csrf, db, limiter, migrate
from .schema import MIGRATIONS, upgrade


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the Sluice app: config, database (migrated), blueprints, CLI."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    app = Flask(__name__, instance_relative_config=True, instance_path=os.environ.get("SLUICE_INSTANCE_PATH"),
                template_folder=os.path.join(root, "templates"), static_folder=os.path.join(root, "static"))
    os.makedirs(app.instance_path, exist_ok=True)
    try:
        app.config.from_mapping(defaults(app.instance_path))
    except ConfigError as exc:  # a mistyped setting: one line and no start, rather than a traceback
        raise SystemExit(f"Sluice cannot start: {exc}") from None
    if test_config:
        app.config.update(test_config)

    # A database that cannot be used does not stop the app from starting: the CLI, /healthz and
    # every page then say what is wrong in one line (503), without the password, instead of a traceback.
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    app.config["SLUICE_DB_ERROR"] = database_url_problem(url)
    if app.config["SLUICE_DB_ERROR"]:
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))
    from .web import upload_limit
    app.before_request(upload_limit)  # before CSRF protection, which parses the form
    csrf.init_app(app)
    limiter.init_app(app)
    if app.config["SLUICE_PROXY_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = app.config["SLUICE_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    with app.app_context():
        configure_engine(db.engine)
        if not app.config["SLUICE_DB_ERROR"]:
            try:
                upgrade(db.engine)
                announce_setup(db.engine, app.instance_path, app.logger)
            except DBAPIError as exc:  # unreachable, refused, or not a database at all
                app.config["SLUICE_DB_ERROR"] = redact(exc.orig, url)

    from . import cli, runs, web
    web.init_app(app)
    runs.init_app(app)
    cli.init_app(app)
    from .web.auth import check_every_route
    check_every_route(app)
    return app

