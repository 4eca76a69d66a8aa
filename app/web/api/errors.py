"""Errors under /api/ as `{"error": {"code", "message"}}`: HTTP errors, bad cursors, the database, the rest."""
from flask import current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ... import queries
from ...datasets.registry import DatasetError
from .blueprint import ApiError, bp

ERROR_NAMES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid"}
MAX_MESSAGE = 500  # an error never carries more of the client's input than this


def error_response(status: int, code: str, message: str, headers=None, **extra):
    """The JSON error answer."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    for name, value in headers or ():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _http_error(exc: HTTPException):
    status = exc.code or 500
    if status == 413:
        message = f"the request is larger than its limit of {request.max_content_length:,} bytes"
    else:
        message = exc.description or exc.name
    return error_response(status, ERROR_NAMES.get(status, exc.name.lower().replace(" ", "_")), message,
                          exc.get_headers())


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, **exc.extra)


@bp.errorhandler(404)  # by code: the app's own 404 handler would come first otherwise
@bp.errorhandler(HTTPException)
def _http_exception(exc: HTTPException):
    if getattr(exc, "dataset", None) is not None:  # filters.UnknownDataset: a name that is no dataset
        return error_response(404, "unknown_dataset", exc.description or "there is no such dataset")
    return _http_error(exc)


# A registry refusal: an unknown dataset (named by `?dataset=` or a path), an archived one on a write,
# a name taken or a change the shape does not allow, a shape that breaks its rules.
DATASET_ERRORS = {"not_found": (404, "unknown_dataset"), "archived": (409, "archived"),
                  "conflict": (409, "conflict"), "invalid": (422, "invalid")}


@bp.errorhandler(DatasetError)
def _dataset_error(exc: DatasetError):
    status, code = DATASET_ERRORS.get(exc.code, (409, exc.code))
    return error_response(status, code, str(exc))


@bp.errorhandler(queries.BadCursor)
def _bad_cursor(exc):
    return error_response(400, "bad_cursor", str(exc))


@bp.errorhandler(SQLAlchemyError)
def _database_error(exc):
    current_app.logger.exception("database error in %s %s", request.method, request.path)
    return error_response(503, "database_error", "the database could not answer; try again")


@bp.errorhandler(Exception)
def _unexpected(exc):
    current_app.logger.exception("unexpected error in %s %s", request.method, request.path)
    return error_response(500, "internal", "the server hit an error it did not expect")


@bp.before_app_request
def _routing_error():
    """404 and 405 under /api/ as JSON: routing fails before any blueprint's handlers apply."""
    exc = request.routing_exception
    if exc is not None and request.path.startswith("/api/") and getattr(exc, "code", 0) >= 400:
        return _http_error(exc)
    return None
