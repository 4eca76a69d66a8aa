"""Error pages: 400 (expired form, bad page link), 404, 413 (with the limit), 500, 503; JSON under /api/."""
from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError, TimeoutError
from werkzeug.exceptions import InternalServerError

from ..config import redact
from ..datasets.registry import DatasetError
from ..formatting import human_bytes
from ..queries import BadCursor

CODES = {400: "bad_request", 404: "not_found", 413: "too_large", 500: "internal", 503: "database_unavailable"}


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def render_error(status: int, title: str, message: str, code: str | None = None):
    """An error as a page, or as `{"error": {"code", "message"}}` under /api/ and for JSON clients."""
    if _wants_json():
        return jsonify({"error": {"code": code or CODES.get(status, "error"), "message": message}}), status
    return render_template("errors/error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    """Register the error pages on the app."""

    @app.errorhandler(404)
    def not_found(exc):
        return render_error(404, "Not found", exc.description if exc.description and "requested URL" not in
                            exc.description else "There is no page at this address.")

    @app.errorhandler(413)
    def too_large(exc):
        if request.max_content_length != app.config["SLUICE_MAX_UPLOAD_BYTES"]:
            return render_error(413, "Request too large", f"The request is larger than the limit of "
                                f"{human_bytes(request.max_content_length)} for this page.")
        limit = human_bytes(app.config["SLUICE_MAX_UPLOAD_BYTES"])
        return render_error(413, "File too large", f"The upload is larger than the limit of {limit}. "
                            "Split the file, compress it with gzip, or ask an operator to raise SLUICE_MAX_UPLOAD_BYTES.")

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return render_error(400, "Form expired", "The form was missing its security token or it had expired. "
                            "Go back, reload the page and submit again.")

    @app.errorhandler(DatasetError)
    def dataset_error(exc):
        # Views catch what they expect; one that escapes is a dataset named in a link or a view's filter.
        if exc.code == "not_found":
            return render_error(404, "No such dataset", str(exc), code="unknown_dataset")
        if exc.code == "archived":
            return render_error(409, "Dataset archived", str(exc), code="archived")
        return render_error(409 if exc.code == "conflict" else 400, "Dataset not changed", str(exc), code=exc.code)

    @app.errorhandler(BadCursor)
    def bad_cursor(exc):
        return render_error(400, "Page link not valid", str(exc))

    @app.errorhandler(InternalServerError)
    def internal(exc):
        return render_error(500, "Something went wrong", "The server hit an error it did not expect. Nothing "
                            "was changed by this request unless its page says so; try again, and tell an operator "
                            "if it keeps happening.")

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(TimeoutError)
    def database_unavailable(exc):
        # The database went away after the start, or is too busy (the API answers its own errors).
        reason = redact(getattr(exc, "orig", None) or exc, app.config["SQLALCHEMY_DATABASE_URI"])
        app.logger.error("database error in %s %s: %s", request.method, request.path, reason)
        return render_error(503, "Database unavailable", "The database could not answer this request; try "
                            "again in a moment, and tell an operator if it keeps happening.")

    @app.before_request
    def database_down():
        error = app.config.get("SLUICE_DB_ERROR")
        if error and request.endpoint not in ("health.healthz", "static"):
            return render_error(503, "Database unavailable", f"Sluice cannot use its database: {error}. Fix "
                                "DATABASE_URL or start the database, then restart Sluice.")

    app.jinja_env.filters["bytes"] = human_bytes
