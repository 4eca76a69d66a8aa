"""The JSON API under /api/ (SPEC §9, §10), built on flask-smorest: runs, target and lineage, dead letters,
watermarks, datasets; every operation on a dataset's data takes `?dataset=NAME` (default events).

Each area's views live in a module of their own and share one blueprint (`api`); `schemas.py` holds the
request and response models, `gate.py` the cross-site gate, `errors.py` the error format. The OpenAPI 3.1
document is made from the views' decorators and served at /api/openapi.json.
"""
import http

from apispec import BasePlugin
from flask import Flask
from flask_smorest import Api
from flask_smorest.spec.plugins import FlaskPlugin

from ...datasets.shape import FIELD_RE
from ..auth import PUBLIC
from . import audit, datasets, dead_letters, errors, gate, runs, schemas, target, tokens, watermarks  # noqa: F401  (they register views)
from .blueprint import bp
from .schemas import SHAPE_COMPONENTS, Error

__all__ = ["bp", "init_app"]
BEARER = "bearerAuth"
UNAUTHORIZED = "UNAUTHORIZED"

DESCRIPTION = """Everything the Sluice dashboard does, over JSON (SPEC §9). Times are UTC.

Lists are keyset pages: pass the `next` value of one page as `cursor` to get the next one; a cursor is
opaque, and one this API did not write answers 400 `bad_cursor`.
Errors are `{"error": {"code": "...", "message": "..."}}` with the 4xx or 503 status each operation lists.
Bodies: JSON (`Content-Type: application/json`) of at most the request limit (1 MiB by default,
SLUICE_MAX_REQUEST_BYTES); uploads up to SLUICE_MAX_UPLOAD_BYTES.

Datasets (SPEC §10): every operation on a dataset's data (runs, target, lineage, dead letters,
watermarks) takes `?dataset=NAME`, default `events`; an unknown dataset answers 404 `unknown_dataset`,
and a write to an archived one 409 `archived`. `/api/datasets` lists, creates, evolves and archives
datasets; `/api/datasets/propose` proposes a shape from a sample file; `/api/datasets/shape-schema` is
the JSON Schema of a shape.

Cross-site requests: state-changing requests (POST, PUT, DELETE) carrying a browser's
`Sec-Fetch-Site: cross-site|same-site` header, or an `Origin` other than this server's own (scheme, host and
port), are refused with 403; scripts send neither header. No CORS header is sent, so other sites' pages
cannot read answers either.

Authentication (SPEC §11): send an API token, `Authorization: Bearer sluice_…` (made on the Account page,
with `POST /api/tokens`, or with `flask --app app tokens create`); a browser signed in to the dashboard
is recognised by its session cookie too, and then keeps the cross-site rule above. A bearer request needs
no CSRF token, and its session cookie, if any, is ignored. Roles, each including the one before:
`viewer` (every read and export), `operator` (uploads, cancel, retry, reprocess, discard, reopen,
watermark set and reset), `admin` (datasets and their shapes, users, every token, the audit log); a token
acts with its own role, never above its user's. Without a valid token or session an operation answers
401 `unauthorized` with a `WWW-Authenticate: Bearer` header (an unknown, revoked or expired token, or one
whose user is disabled, is not valid); a role too low answers 403 `forbidden`. The document itself
(`/api/openapi.json`) is open."""


class SluiceApi(Api):
    """flask-smorest's Api with Sluice's error format, and no catch-all `default` response in the document."""

    ERROR_SCHEMA = Error
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_error_handlers(self):
        """Errors are the API blueprint's own (errors.py): the pages keep their HTML error pages."""


class OperationIds(BasePlugin):
    """Name each operation after its view (`get_run`), so that OpenAPI links can point at it.

    Also declares object-valued query parameters (their schemas resolved by then) as deepObject.
    """

    def operation_helper(self, path=None, operations=None, **kwargs):
        rule = kwargs.get("rule")
        for operation in (operations or {}).values():
            if rule is not None:
                operation.setdefault("operationId", rule.endpoint.rpartition(".")[2])
            for parameter in operation.get("parameters", []):
                if isinstance(parameter, dict):
                    _deep_object(parameter)


class OperationParameters(FlaskPlugin):
    """Path parameters inside each operation (as clients and tests read them), not beside them."""

    def path_helper(self, rule, operations, parameters, **kwargs):
        path = super().path_helper(rule, operations, parameters, **kwargs)
        for operation in operations.values():
            operation["parameters"] = [*parameters, *operation.get("parameters", [])]
        parameters.clear()
        return path


class Security(BasePlugin):
    """Each guarded operation names the bearer scheme and its 401 and 403 answers, from its view's role."""

    def __init__(self, app: Flask):
        self.app = app

    def operation_helper(self, path=None, operations=None, **kwargs):
        rule = kwargs.get("rule")
        view = self.app.view_functions.get(rule.endpoint) if rule is not None else None
        if getattr(view, "sluice_role", PUBLIC) == PUBLIC:
            return
        for operation in (operations or {}).values():
            operation["security"] = [{BEARER: []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", UNAUTHORIZED)  # a component of that name, as flask-smorest writes them
            responses.setdefault("403", "FORBIDDEN")


def _deep_object(parameter: dict) -> None:
    """A query parameter holding an object (`search`) is sent as `name[FIELD]=value`, keyed by field names."""
    schema = parameter.get("schema") or {}
    if parameter.get("in") == "query" and schema.get("type") == "object":
        parameter.update(style="deepObject", explode=True)
        schema.setdefault("propertyNames", {"pattern": FIELD_RE})


def _id_schema(converter) -> dict:
    # The app's `int` converter takes ASCII digits up to 2**63-1; ids start at 1.
    return {"type": "integer", "minimum": 1, "maximum": 2 ** 63 - 1}


def init_app(app: Flask) -> None:
    """Register the API blueprint and serve its OpenAPI document at /api/openapi.json."""
    for name, value in {"API_TITLE": "Sluice API", "API_VERSION": "1", "OPENAPI_VERSION": "3.1.0",
                        "OPENAPI_URL_PREFIX": "/api", "OPENAPI_JSON_PATH": "openapi.json"}.items():
        app.config.setdefault(name, value)
    api = SluiceApi(app, spec_kwargs={"flask_plugin": OperationParameters(),
                                      "extra_plugins": [OperationIds(), Security(app)],
                                      "info": {"description": DESCRIPTION}})
    api.spec.components.security_scheme(BEARER, {
        "type": "http", "scheme": "bearer", "bearerFormat": "sluice_…",
        "description": "An API token: `Authorization: Bearer sluice_…`. A browser signed in to the dashboard "
                       "is recognised by its session cookie instead (same-origin requests only)."})
    for status, name in ((401, UNAUTHORIZED), (403, "FORBIDDEN")):
        if name not in api.spec.components.responses:
            api.spec.components.response(name, {"description": http.HTTPStatus(status).phrase,
                                                "content": {"application/json": {"schema": Error}}})
    api.register_converter(app.url_map.converters["int"], _id_schema)
    for name, component in SHAPE_COMPONENTS.items():
        api.spec.components.schema(name, component=component)
    api.register_blueprint(bp)
    # Referenced by the `anyOf`s of exports and rows, not by a field: registered by name.
    for name in ("TargetRow", "TargetPage", "DeadLetterExport", "DeadLetterPage"):
        if name not in api.spec.components.schemas:
            api.spec.components.schema(name, schema=getattr(schemas, name))
