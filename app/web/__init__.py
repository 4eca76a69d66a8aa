"""The web app's blueprints and error pages."""
from flask import Flask, current_app, request

from ..formatting import number


def _dict_without(mapping, *names) -> dict:
    """A copy of a mapping (e.g. request.args) without some keys and without empty values."""
    return {k: v for k, v in dict(mapping).items() if k not in names and v not in ("", None)}


UPLOAD_ENDPOINTS = frozenset({"upload.upload", "api.create_run"})


def upload_limit() -> None:
    """Let the two upload endpoints read bodies up to the upload limit; every other stays at the small one.

    Registered before CSRF protection, which reads the form, so the limit is in force when the body is parsed.
    """
    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = current_app.config["SLUICE_MAX_UPLOAD_BYTES"]


def init_app(app: Flask) -> None:
    """Register every blueprint of the dashboard, its error pages and its security checks and headers."""
    from . import dead_letters, errors, health, home, lineage, runs, security, target, upload, watermarks
    from .converters import IdConverter

    # Before any route is added: rules pick their converter when they are registered.
    app.url_map.converters["int"] = IdConverter
    security.init_app(app)
    for module in (home, upload, runs, target, dead_letters, lineage, watermarks, health):
        app.register_blueprint(module.bp)
    from . import api
    api.init_app(app)
    errors.init_app(app)
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["dict_without"] = _dict_without
