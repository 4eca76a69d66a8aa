"""Error pages: 400 (expired form, bad page link), 404, 413 (with the limit), 500; JSON under /api/."""
from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import InternalServerError

from ..formatting import human_bytes
from ..queries import BadCursor


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _render(status: int, title: str, message: str):
    if _wants_json():
        code = {400: "bad_request", 404: "not_found", 413: "too_large", 500: "internal",
                503: "database_unavailable"}.get(status, "error")
        return jsonify({"error": {"code": code, "message": message}}), status
    return render_template("errors/error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    """Register the error pages on the app."""

    @app.errorhandler(404)
    def not_found(exc):
        return _render(404, "Not found", exc.description if exc.description and "requested URL" not in
                       exc.description else "There is no page at this address.")

    @app.errorhandler(413)
    def too_large(exc):
        if request.max_content_length != app.config["SLUICE_MAX_UPLOAD_BYTES"]:
            return _render(413, "Request too large", f"The request is larger than the limit of "
                           f"{human_bytes(request.max_content_length)} for this page.")
        limit = human_bytes(app.config["SLUICE_MAX_UPLOAD_BYTES"])
        return _render(413, "File too large", f"The upload is larger than the limit of {limit}. "
                       "Split the file, compress it with gzip, or ask an operator to raise SLUICE_MAX_UPLOAD_BYTES.")

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return _render(400, "Form expired", "The form was missing its security token or it had expired. "
                       "Go back, reload the page and submit again.")

    @app.errorhandler(BadCursor)
    def bad_cursor(exc):
        return _render(400, "Page link not valid", str(exc))

    @app.errorhandler(InternalServerError)
    def internal(exc):
        return _render(500, "Something went wrong", "The server hit an error it did not expect. Nothing was "
                       "changed by this request unless its page says so; try again, and tell an operator if it "
                       "keeps happening.")

    @app.before_request
    def database_down():
        error = app.config.get("SLUICE_DB_ERROR")
        if error and request.endpoint not in ("health.healthz", "static"):
            return _render(503, "Database unavailable", f"Sluice cannot use its database: {error}. Fix "
                           "DATABASE_URL or start the database, then restart Sluice.")

    app.jinja_env.filters["bytes"] = human_bytes
