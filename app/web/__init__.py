"""The web app's blueprints and error pages, and the dataset every dataset page is about."""
from flask import Flask, current_app, g, request
from sqlalchemy.exc import SQLAlchemyError

from ..datasets.registry import DEFAULT, list_datasets
from ..extensions import db
from ..formatting import number
from .filters import current_dataset


def _dict_without(mapping, *names) -> dict:
    """A copy of a mapping (e.g. request.args) without some keys and without empty values."""
    return {k: v for k, v in dict(mapping).items() if k not in names and v not in ("", None)}


UPLOAD_ENDPOINTS = frozenset({"upload.upload", "api.create_run", "datasets.propose"})
# The pages of one dataset: `?dataset=NAME` (absent: events) says which, and their links keep it.
DATASET_BLUEPRINTS = frozenset({"home", "upload", "runs", "target", "dead_letters", "lineage", "watermarks"})
# Where the dataset switcher of each area goes.
SWITCH_TO = {"runs": "runs.index", "target": "target.index", "dead_letters": "dead_letters.index",
             "lineage": "target.index", "watermarks": "watermarks.index"}


def upload_limit() -> None:
    """Let the two upload endpoints read bodies up to the upload limit; every other stays at the small one.

    Registered before CSRF protection, which reads the form, so the limit is in force when the body is parsed.
    """
    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = current_app.config["SLUICE_MAX_UPLOAD_BYTES"]


def _forget_dataset() -> None:
    # g lives as long as the app context, which a test (or an outer context) may keep across requests.
    g.pop("dataset", None)
    g.pop("dataset_menu", None)


def resolve_dataset() -> None:
    """Resolve the dataset a dataset page names, once per request (`g.dataset`); unknown: 404."""
    if request.blueprint not in DATASET_BLUEPRINTS:
        return
    g.dataset = current_dataset(request.args.get("dataset", "").strip() or DEFAULT)  # UnknownDataset: a 404


def carry_dataset(endpoint: str, values: dict) -> None:
    """Every link and form of a dataset page stays in its dataset (events needs no parameter)."""
    if "dataset" in values or endpoint.partition(".")[0] not in DATASET_BLUEPRINTS:
        return
    dataset = g.get("dataset")
    if dataset is not None and dataset.name != DEFAULT:
        values["dataset"] = dataset.name


def dataset_menu() -> list:
    """Every dataset, for the switcher; none when the database cannot answer (an error page still renders)."""
    if current_app.config.get("SLUICE_DB_ERROR"):
        return []
    if "dataset_menu" not in g:
        try:
            with db.engine.connect() as conn:
                g.dataset_menu = list_datasets(conn)
        except SQLAlchemyError:
            g.dataset_menu = []
    return g.dataset_menu


def _template_globals() -> dict:
    return {"dataset": g.get("dataset"), "dataset_menu": dataset_menu, "switch_to": SWITCH_TO,
            "default_dataset": DEFAULT}


def init_app(app: Flask) -> None:
    """Register every blueprint of the dashboard, its error pages and its security checks and headers."""
    from . import (
        account,
        audit,
        auth,
        datasets,
        dead_letters,
        errors,
        health,
        home,
        lineage,
        runs,
        security,
        target,
        upload,
        users,
        watermarks,
    )
    from .converters import IdConverter

    # Before any route is added: rules pick their converter when they are registered.
    app.url_map.converters["int"] = IdConverter
    security.init_app(app)
    for module in (home, upload, runs, target, dead_letters, lineage, watermarks, datasets, health, account, audit,
                   users):
        app.register_blueprint(module.bp)
    from . import api
    api.init_app(app)
    errors.init_app(app)
    auth.init_app(app)  # after the database check, before the dataset is looked up
    app.before_request_funcs.setdefault(None, []).insert(0, _forget_dataset)
    app.before_request(resolve_dataset)  # after the database check of errors.init_app
    app.url_defaults(carry_dataset)
    app.context_processor(_template_globals)
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["dict_without"] = _dict_without
    app.jinja_env.filters["warnings"] = runs.run_warnings
