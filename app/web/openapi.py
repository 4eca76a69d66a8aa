"""The OpenAPI 3.1 document of the JSON API, built from the parameter declarations in `api.py`.

Query parameters come from the same `Param` objects the views parse with; bodies and answers are
described here, and `tests/test_api.py` checks that every route of the blueprint is documented.
"""
from functools import lru_cache

from .. import queries
from ..pipeline.run import KINDS
from . import api

NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
TIME = {"type": "string", "description": "UTC, YYYY-MM-DDTHH:MM:SS[.ffffff]"}
NULLABLE_TIME = {"type": ["string", "null"], "description": TIME["description"]}
CURSOR_OUT = {"type": ["string", "null"],
              "description": "Pass as `cursor` for the next page; null on the last."}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(name: str) -> dict:
    return {"anyOf": [_ref(name), {"type": "null"}]}


def _obj(properties: dict, required=None, **more) -> dict:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required, **more}


def _page(item: dict, **more) -> dict:
    return _obj({"items": {"type": "array", "items": item}, "next": CURSOR_OUT, **more})


COUNTS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged",
          "stale", "loaded", "dead_letters", "lineage_entries")

SCHEMAS = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"},
                                  "count": {"type": "integer",
                                            "description": "count_mismatch: the current count"}},
                                 required=["code", "message"])}),
    "Options": _obj({"ignore_watermark": {"type": "boolean"}, "max_reject_rate": {"type": ["number", "null"]},
                     "dry_run": {"type": "boolean"}}),
    "Progress": _obj({"phase": {"type": "string"}, "records": {"type": "integer"},
                      "bytes_read": {"type": "integer"}, "file_size": NULLABLE_INT}, required=["phase"],
                     description="Live progress of a running run."),
    "Summary": _obj({"run_id": {"type": "integer"}, "status": {"type": "string"},
                     **{c: {"type": "integer"} for c in COUNTS},
                     "watermark_before": NULLABLE_TIME, "watermark": NULLABLE_TIME,
                     "dry_run": {"type": "boolean"},
                     "error": NULLABLE_STR},
                    description="Every count of the run (SPEC §2) and the seed's keys."),
    "Run": _obj({
        "id": {"type": "integer"}, "kind": {"type": "string", "enum": list(KINDS)},
        "status": {"type": "string", "enum": list(queries.RUN_STATUSES)},
        "source_name": NULLABLE_STR, "source_size": NULLABLE_INT, "source_sha256": NULLABLE_STR,
        "retry_of_id": NULLABLE_INT, "same_file_run_id": NULLABLE_INT, "dead_letter_id": NULLABLE_INT,
        "queued_at": TIME, "started_at": NULLABLE_TIME, "finished_at": NULLABLE_TIME,
        "file_removed_at": NULLABLE_TIME, "cancel_requested": {"type": "boolean"}, "error": NULLABLE_STR,
        "options": _ref("Options"), "file_kept": {"type": "boolean"},
        "retried_by": {"type": "array", "items": {"type": "integer"}},
        "progress": _nullable("Progress"), "summary": _nullable("Summary"), "url": {"type": "string"},
    }),
    "TargetRow": _obj({"key": {"type": "string"}, "name": {"type": "string"}, "value": {"type": "number"},
                       "ts": TIME, "updated_at": TIME, "run_id": NULLABLE_INT}),
    "LineageEntry": _obj({"id": {"type": "integer"}, "run_id": NULLABLE_INT, "pos": NULLABLE_INT,
                          "line": NULLABLE_INT, "key": {"type": "string"}, "step": {"type": "string"},
                          "at": TIME, "detail": {"type": "string"}, "dead_letter_id": NULLABLE_INT,
                          "actor": NULLABLE_STR}),
    "HistoryEntry": _obj({"id": {"type": "integer"}, "old_value": NULLABLE_TIME, "new_value": NULLABLE_TIME,
                          "at": TIME, "via": {"type": "string"}, "run_id": NULLABLE_INT,
                          "actor": NULLABLE_STR}),
    "Watermark": _obj({"name": {"type": "string"}, "value": NULLABLE_TIME, "updated_at": NULLABLE_TIME,
                       "history": {"type": "array", "items": _ref("HistoryEntry")},
                       "history_next": CURSOR_OUT,
                       "url": {"type": "string"}}),
}
DEAD_LETTER = {
    "id": {"type": "integer"}, "run_id": {"type": "integer"}, "last_run_id": {"type": "integer"},
    "pos": {"type": "integer"}, "line": NULLABLE_INT, "key": NULLABLE_STR,
    "error": {"type": "string", "enum": list(queries.ERROR_CODES)}, "detail": {"type": "string"},
    "raw": {"type": "string", "description": "The record as received (JSON text, or a malformed line)."},
    "status": {"type": "string", "enum": list(queries.DEAD_LETTER_STATUSES)},
    "created_at": TIME, "updated_at": TIME, "attempts": {"type": "integer"}, "sightings": {"type": "integer"},
    "outcome": NULLABLE_STR, "resolved_run_id": NULLABLE_INT, "reason": NULLABLE_STR,
}
assert set(DEAD_LETTER) == set(api.DEAD_LETTER_FIELDS)
SCHEMAS["DeadLetterExport"] = _obj(DEAD_LETTER, description="A dead letter in an export.")
SCHEMAS["DeadLetter"] = _obj({**DEAD_LETTER, "url": {"type": "string"}})
SCHEMAS["DeadLetterDetail"] = {"allOf": [_ref("DeadLetter"), _obj({
    "last_raw": {"type": ["string", "null"], "description": "The JSON of the last failed retry."},
    "history": {"type": "array", "items": _ref("LineageEntry")}})]}
SCHEMAS["BulkResult"] = _obj({"count": {"type": "integer"}, "run": _nullable("Summary")})

FILTER = {"type": ["object", "null"], "description": "Which open dead letters: all of them when empty.",
          "additionalProperties": False,
          "properties": {"error": {"enum": [*queries.ERROR_CODES, None]},
                         "run": {"type": ["integer", "null"], "minimum": 1, "maximum": api.MAX_ID}}}
# Any JSON in the fields: a record that fails validation is a valid request (the dead letter stays open).
RECORD = {"type": "object", "description": "A record: `key`, `name`, `value`, `ts`, and any other fields.",
          "properties": {"key": {"description": "A string."}, "name": {"description": "A string."},
                         "value": {"description": "A number, or a string holding one."},
                         "ts": {"description": "A timestamp like 2025-01-15T12:30:00Z."}}}
CONFIRM = {"type": "integer", "minimum": 0, "description": "The count you were shown; 409 when it changed."}
REASON = {"type": ["string", "null"], "pattern": api.TEXT_PATTERN, "description": "Why (kept in lineage)."}


def _parameters(params) -> list[dict]:
    return [{"name": p.name, "in": "query", "required": p.required, "description": p.description,
             "schema": p.schema} for p in params]


def _path(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


RUN_ID = _path("run_id", {"type": "integer", "minimum": 1, "maximum": api.MAX_ID}, "A run's id.")
DL_ID = _path("dl_id", {"type": "integer", "minimum": 1, "maximum": api.MAX_ID}, "A dead letter's id.")
KEY = _path("key", {"type": "string", "minLength": 1}, "A record key (may contain `/`).")
WM_NAME = _path("name", {"type": "string", "enum": list(api.WATERMARK_NAMES)}, "The watermark's name.")

ERRORS = {
    400: "Bad parameters or body.", 403: "A cross-site browser request (see the description).",
    404: "No such resource.", 409: "The resource's state does not allow it, or `confirm` no longer matches.",
    413: "Larger than the upload limit.", 415: "Not JSON, JSON Lines or gzip / a body that is not JSON.",
    422: "Parses but is invalid (e.g. a watermark in the future, edited JSON that is not JSON).",
}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _op(op_id: str, summary: str, ok: tuple, *, errors=(400,), params=(), path=(), body=None,
        tag: str) -> dict:
    status, description, schema = ok[:3]
    response = {"description": description, "content": ok[3] if len(ok) > 3 else _json(schema)}
    if status in (201, 202) and op_id in ("createRun", "retryRun"):
        response["headers"] = {"Location": {"description": "The run's URL.", "schema": {"type": "string"}}}
    responses = {str(status): response}
    for code in errors:
        responses[str(code)] = {"description": ERRORS[code], "content": _json(_ref("Error"))}
    responses["default"] = {"description": "Any other error.", "content": _json(_ref("Error"))}
    op = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses,
          "parameters": [*path, *_parameters(params)]}
    if body is not None:
        op["requestBody"] = body
    return op


def _body(schema: dict, required: bool = False) -> dict:
    return {"required": required, "content": _json({**schema, "additionalProperties": False})}


def _export(page: dict, row: str) -> dict:
    return {"application/json": {"schema": {"anyOf": [page, {"type": "array", "items": _ref(row)}]}},
            "text/csv": {"schema": {"type": "string"}}}


MUTATING = (403,)
RAW_SCHEMAS = {"application/json": {}, "application/x-ndjson": {"type": "string"},
               "application/jsonl": {"type": "string"}}
UPLOAD_BODY = {"required": False, "content": {
    "multipart/form-data": {"schema": _obj({"file": {"type": "string", "format": "binary"}})},
    **{t: {"schema": RAW_SCHEMAS.get(t, {"type": "string", "format": "binary"})}
       for t in api.RAW_UPLOAD_TYPES},
}}

DESCRIPTION = """Everything the Sluice dashboard does, over JSON (SPEC §9). Times are UTC.

Lists are keyset pages: pass the `next` value of one page as `cursor` to get the next one.
Errors are `{"error": {"code": "...", "message": "..."}}` with a 4xx status.

Cross-site requests: state-changing requests (POST, PUT, DELETE) carrying a browser's
`Sec-Fetch-Site: cross-site|same-site` header, or an `Origin` other than this server's, are refused
with 403; scripts send neither header. No CORS header is sent, so other sites' pages cannot read
answers either. There is no authentication yet."""


@lru_cache(maxsize=1)
def document() -> dict:
    """The OpenAPI 3.1 document of the API."""
    run_ok = (200, "The run.", _ref("Run"))
    dl_ok = (200, "The dead letter.", _ref("DeadLetterDetail"))
    wm_ok = (200, "The watermark.", _ref("Watermark"))
    paths = {
        "/api/runs": {
            "post": _op("createRun", "Upload a file: queue a run", (202, "The queued run.", _ref("Run")),
                        errors=(400, *MUTATING, 413, 415), params=api.UPLOAD_PARAMS,
                        body=UPLOAD_BODY, tag="runs"),
            "get": _op("listRuns", "The run history, newest first",
                       (200, "A page of runs.", _page(_ref("Run"))),
                       params=api.RUNS_PARAMS, tag="runs"),
        },
        "/api/runs/{run_id}": {"get": _op(
            "getRun", "A run: progress while it runs, summary when done", run_ok,
            errors=(404,), path=[RUN_ID], tag="runs")},
        "/api/runs/{run_id}/cancel": {"post": _op(
            "cancelRun", "Cancel a queued or running run",
            (202, "The run, cancelled or stopping.", _ref("Run")),
            errors=(*MUTATING, 404, 409), path=[RUN_ID], tag="runs")},
        "/api/runs/{run_id}/retry": {"post": _op(
            "retryRun", "Retry a failed or cancelled run from its kept file",
            (202, "The new run.", _ref("Run")),
            errors=(*MUTATING, 404, 409), path=[RUN_ID], tag="runs")},
        "/api/target": {"get": _op(
            "listTarget", "The target table: search, sort, pages; or the whole view as CSV or JSON",
            (200, "A page of rows, or the streamed export.", None,
             _export(_page(_ref("TargetRow")), "TargetRow")),
            params=api.TARGET_PARAMS, tag="target")},
        "/api/lineage/{key}": {"get": _op(
            "getLineage", "A key's target row and lineage timeline, newest first",
            (200, "The key's lineage.", _obj({"key": {"type": "string"}, "target": _nullable("TargetRow"),
                                              "items": {"type": "array", "items": _ref("LineageEntry")},
                                              "next": CURSOR_OUT})),
            errors=(400, 404), params=api.PAGE_PARAMS, path=[KEY], tag="lineage")},
        "/api/dead-letters": {"get": _op(
            "listDeadLetters", "Dead letters, newest first, with counts per error code; or exported",
            (200, "A page of dead letters, or the streamed export.", None, _export(
                _page(_ref("DeadLetter"),
                      counts={"type": "object", "additionalProperties": {"type": "integer"}}),
                "DeadLetterExport")),
            params=api.DEAD_LETTER_PARAMS, tag="dead letters")},
        "/api/dead-letters/{dl_id}": {"get": _op("getDeadLetter", "One dead letter with its history", dl_ok,
                                                 errors=(404,), path=[DL_ID], tag="dead letters")},
        "/api/dead-letters/{dl_id}/reprocess": {"post": _op(
            "reprocessDeadLetter", "Retry an open dead letter, unchanged or edited, as a run of its own",
            (200, "The reprocess run's summary and the dead letter.",
             _obj({"run": _ref("Summary"), "dead_letter": _ref("DeadLetterDetail")})),
            errors=(400, *MUTATING, 404, 409, 415, 422), path=[DL_ID], tag="dead letters",
            body=_body(_obj({"raw": {"anyOf": [RECORD, {"type": "string", "pattern": api.TEXT_PATTERN},
                                               {"type": "null"}],
                                     "description": "The edited record (an object), or its JSON text; "
                                                    "absent or null retries the record unchanged."}},
                            required=[]))),
        },
        "/api/dead-letters/{dl_id}/discard": {"post": _op(
            "discardDeadLetter", "Discard an open dead letter", dl_ok, errors=(400, *MUTATING, 404, 409, 415),
            path=[DL_ID], tag="dead letters", body=_body(_obj({"reason": REASON}, required=[])))},
        "/api/dead-letters/{dl_id}/reopen": {"post": _op(
            "reopenDeadLetter", "Reopen a discarded dead letter", dl_ok, errors=(*MUTATING, 404, 409),
            path=[DL_ID], tag="dead letters")},
        "/api/dead-letters/reprocess": {"post": _op(
            "bulkReprocess", "Retry every open dead letter a filter selects, as one run",
            (200, "How many, and the run's summary.", _ref("BulkResult")), errors=(400, *MUTATING, 409, 415),
            tag="dead letters", body=_body(_obj({"filter": FILTER, "confirm": CONFIRM}, required=["confirm"]),
                                           required=True))},
        "/api/dead-letters/discard": {"post": _op(
            "bulkDiscard", "Discard every open dead letter a filter selects",
            (200, "How many were discarded.", _ref("BulkResult")), errors=(400, *MUTATING, 409, 415),
            tag="dead letters", body=_body(_obj({"filter": FILTER, "confirm": CONFIRM, "reason": REASON},
                                                required=["confirm"]), required=True))},
        "/api/watermarks": {"get": _op(
            "listWatermarks", "Every watermark with its value and latest history",
            (200, "The watermarks.", _page(_ref("Watermark"))), params=(api.LIMIT,), tag="watermarks")},
        "/api/watermarks/{name}": {
            "get": _op("getWatermark", "A watermark and its history, newest first", wm_ok, errors=(400, 404),
                       params=api.PAGE_PARAMS, path=[WM_NAME], tag="watermarks"),
            "put": _op("setWatermark", "Set the watermark (a past or present timestamp)", wm_ok,
                       errors=(400, *MUTATING, 404, 415, 422), path=[WM_NAME], tag="watermarks",
                       body=_body(_obj({"value": {"type": "string", "pattern": api.TEXT_PATTERN,
                                                  "description": "A timestamp like 2025-01-15T12:30:00Z."}}),
                                  required=True)),
            "delete": _op("resetWatermark", "Reset (remove) the watermark", wm_ok, errors=(*MUTATING, 404),
                          path=[WM_NAME], tag="watermarks"),
        },
        "/api/watermarks/{name}/preview": {"get": _op(
            "previewWatermark", "How many target rows lie at or after a candidate value",
            (200, "The preview.", _obj({"name": {"type": "string"}, "value": NULLABLE_TIME,
                                        "rows_at_or_after": {"type": "integer"}})),
            errors=(400, 404, 422), params=api.PREVIEW_PARAMS, path=[WM_NAME], tag="watermarks")},
        "/api/openapi.json": {"get": _op("openapi", "This document",
                                         (200, "The OpenAPI document.", {"type": "object"}), errors=(),
                                         tag="meta")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice API", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
