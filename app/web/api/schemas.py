"""The API's request and response models (marshmallow): they parse requests and make the OpenAPI document.

Query and body schemas are loaded by flask-smorest (webargs) before a view runs; response schemas only
document what the views answer (the views build their JSON themselves, so shapes stay as SPEC §9 says).
Every schema refuses unknown fields (`additionalProperties: false`) except query strings, which ignore them.
"""
from typing import ClassVar

from marshmallow import EXCLUDE, Schema, fields, validate

from ... import queries
from ...datasets.shape import NAME_RE, SHAPE_JSON_SCHEMA
from ...pipeline.run import KINDS, WARNING_CODES
from ..filters import (
    MAX_ID,
    TEXT_PATTERN,
    DeadLetterView,
    Flag,
    Int,
    Rate,
    RunsView,
    TargetView,
    dataset_field,
    text,
)

# The opaque `next` cursor: base64url without padding (of a small JSON array).
CURSOR_PATTERN = "^[A-Za-z0-9_-]*$"
# What an operator may type for a watermark (SPEC §3); the server also refuses future values (422).
WATERMARK_PATTERN = ("^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,6})?)?"
                     "(Z|[+-][0-9]{2}:[0-9]{2})?$")
TIME = "UTC, YYYY-MM-DDTHH:MM:SS[.ffffff]"
WHO = "Who (a user, `user (token name)`, or `cli:<os user>`)"
RAW_UPLOAD_TYPES = ("application/json", "application/x-ndjson", "application/jsonl", "application/gzip",
                    "application/octet-stream")


def _time(**kwargs) -> fields.String:
    return fields.String(required=True, metadata={"description": TIME}, **kwargs)


def _str(**kwargs) -> fields.String:
    return fields.String(required=True, **kwargs)


def _int(**kwargs) -> fields.Integer:
    return fields.Integer(required=True, **kwargs)


# --- query strings -----------------------------------------------------------------------------------

class PageQuery(Schema):
    """A keyset page: the previous page's cursor and a page size."""

    class Meta:
        unknown = EXCLUDE

    cursor = fields.String(validate=[validate.Length(max=4096), validate.Regexp(CURSOR_PATTERN)],
                           metadata={"description": "The `next` cursor of the previous page (opaque)."})
    limit = Int(text=True, load_default=queries.PAGE, validate=validate.Range(1, queries.MAX_PAGE),
                metadata={"description": "How many items per page."})


class LimitQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = PageQuery._declared_fields["limit"]


class DatasetQuery(Schema):
    """The dataset an operation reads or writes (absent: events)."""

    class Meta:
        unknown = EXCLUDE

    dataset = dataset_field(validate=validate.Length(min=1))


class OwnerQuery(Schema):
    """The dataset an id-addressed object must belong to, when given (404 otherwise)."""

    class Meta:
        unknown = EXCLUDE

    dataset = fields.String(validate=validate.Length(min=1), metadata={
        "pattern": NAME_RE, "description": "When given, the object must belong to this dataset (404 otherwise); "
                                           "an unknown dataset answers 404 `unknown_dataset`."})


class LineageQuery(PageQuery, DatasetQuery):
    pass


class WatermarksQuery(LimitQuery, DatasetQuery):
    pass


class WatermarkPageQuery(PageQuery, OwnerQuery):
    pass



FORMAT = fields.String(validate=validate.OneOf(["csv", "json"]),
                       metadata={"description": "Stream the whole view (every page) as CSV or as a JSON array."})


# The API refuses an empty `dataset=` (the document's pattern does); the pages take it as events.
DATASET = dataset_field(validate=validate.Length(min=1))


class RunsQuery(RunsView, PageQuery):
    dataset = DATASET


class TargetQuery(TargetView, PageQuery):
    dataset = DATASET
    format = FORMAT


class DeadLetterQuery(DeadLetterView, PageQuery):
    dataset = DATASET
    format = FORMAT


class UploadQuery(DatasetQuery):
    """The dataset, the run options of SPEC §2, and the name recorded for a raw-body upload."""

    class Meta:
        unknown = EXCLUDE

    ignore_watermark = Flag(load_default=False, metadata={"description": "Backfill: load records older "
                                                                         "than the watermark."})
    max_reject_rate = Rate(validate=validate.Range(0, 1), metadata={
        "description": "Fail the run, loading nothing, when a larger share of its records is rejected."})
    dry_run = Flag(load_default=False, metadata={"description": "Compute and report everything, keep "
                                                               "nothing but the run's record."})
    filename = text(255, metadata={"description": "The source name recorded for a raw-body upload "
                                                  "(multipart uses the part's)."})


class PreviewQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    value = fields.String(metadata={"pattern": WATERMARK_PATTERN,
                                    "description": "The candidate value; leave it out to preview a reset."})


class WatermarkPreviewQuery(PreviewQuery, OwnerQuery):
    pass


# --- bodies ----------------------------------------------------------------------------------------

class Edited(fields.Field):
    """The edited record for a reprocess: an object, or its JSON text (parsed by the view)."""

    default_error_messages: ClassVar[dict] = {"invalid": "must be the edited record (an object) or its JSON text"}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and value:
            return value
        raise self.make_error("invalid")


RECORD = {"type": "object", "description": "A record: `key`, `name`, `value`, `ts`, and any other fields."}


class ReprocessBody(Schema):
    raw = Edited(allow_none=True, metadata={
        "anyOf": [RECORD, {"type": "string", "minLength": 1, "pattern": TEXT_PATTERN}, {"type": "null"}],
        "description": "The edited record (an object), or its JSON text; absent or null retries the record "
                       "unchanged. At most the record limit (SLUICE_MAX_RECORD_BYTES) as JSON text."})


REASON = text(500, allow_none=True, metadata={"description": "Why (kept in lineage)."})


class DiscardBody(Schema):
    reason = REASON


ERROR_CODE = "^[a-z_][a-z0-9_]{0,79}$"


class BulkFilter(Schema):
    error = fields.String(allow_none=True, validate=validate.Regexp(ERROR_CODE),
                          metadata={"description": "One of the dataset's error codes."})
    run = Int(allow_none=True, validate=validate.Range(1, MAX_ID))


class BulkBody(Schema):
    filter = fields.Nested(BulkFilter, allow_none=True,
                           metadata={"description": "Which open dead letters: all of them when empty."})
    confirm = Int(required=True, validate=validate.Range(0, MAX_ID),
                  metadata={"description": "The count you were shown; 409 when it changed."})


class BulkDiscardBody(BulkBody):
    reason = REASON


class WatermarkBody(Schema):
    value = fields.String(required=True, metadata={
        "pattern": WATERMARK_PATTERN, "description": "A timestamp like 2025-01-15T12:30:00Z, not in the future."})


# --- answers ---------------------------------------------------------------------------------------

class ErrorDetail(Schema):
    code = _str()
    message = _str()
    count = fields.Integer(metadata={"description": "count_mismatch: the current count"})


class Error(Schema):
    """`{"error": {"code", "message"}}`, with a 4xx or 503 status."""

    error = fields.Nested(ErrorDetail, required=True)


class Options(Schema):
    ignore_watermark = fields.Boolean(required=True)
    max_reject_rate = fields.Float(required=True, allow_none=True)
    dry_run = fields.Boolean(required=True)
    backfill_of = fields.Integer(metadata={"description": "The run this one backfills (only on a backfill)."})


class Warning(Schema):
    """Why a run that succeeded needs attention (SPEC §5)."""

    code = _str(validate=validate.OneOf(list(WARNING_CODES)))
    message = _str()


WARNINGS = {"description": "What needs attention in a run that succeeded (empty for a clean run, and for "
                           "any run that did not succeed)."}


class Progress(Schema):
    """Live progress of a running run."""

    class Meta:
        unknown = EXCLUDE  # the reporter may add counters

    phase = _str()
    records = fields.Integer()
    bytes_read = fields.Integer()
    file_size = fields.Integer(allow_none=True)


COUNTS = ("input_records", "skipped", "rejected", "staged", "superseded", "inserted", "updated", "unchanged",
          "stale", "loaded", "dead_letters", "lineage_entries")


class Summary(Schema):
    """Every count of a run (SPEC §2) and the seed's keys."""

    class Meta:
        unknown = EXCLUDE

    run_id = fields.Integer()
    dataset = fields.String()
    status = fields.String()
    watermark_before = fields.String(allow_none=True)
    watermark = fields.String(allow_none=True)
    dry_run = fields.Boolean()
    error = fields.String(allow_none=True)
    warnings = fields.List(fields.Nested(Warning), metadata=WARNINGS)


for _count in COUNTS:
    Summary._declared_fields[_count] = fields.Integer()


class WouldReject(Schema):
    """A record a dry run would have rejected (one of its first 100, in file order)."""

    pos = _int()
    line = _int(allow_none=True)
    key = _str(allow_none=True)
    error = _str()
    detail = _str()
    raw = _str(metadata={"description": "The record as received, cut to its first 2,000 characters."})
    raw_length = _int(metadata={"description": "The raw record's whole length in characters."})
    truncated = fields.Boolean(required=True, metadata={"description": "Whether `raw` was cut."})


class Run(Schema):
    id = _int()
    dataset = _str()
    shape_version = _int(allow_none=True, metadata={"description": "The dataset's shape version the run used "
                                                                  "(null until it starts)."})
    kind = _str(validate=validate.OneOf(list(KINDS)))
    status = _str(validate=validate.OneOf(list(queries.RUN_STATUSES)))
    source_name = _str(allow_none=True)
    source_size = _int(allow_none=True)
    source_sha256 = _str(allow_none=True)
    retry_of_id = _int(allow_none=True)
    same_file_run_id = _int(allow_none=True)
    dead_letter_id = _int(allow_none=True)
    queued_at = _time()
    started_at = _time(allow_none=True)
    finished_at = _time(allow_none=True)
    file_removed_at = _time(allow_none=True)
    cancel_requested = fields.Boolean(required=True)
    error = _str(allow_none=True)
    created_by = _str(allow_none=True, metadata={"description": WHO + " uploaded, retried or reprocessed it "
                                                                "(null for a run made before users)."})
    cancelled_by = _str(allow_none=True, metadata={"description": WHO + " cancelled it."})
    options = fields.Nested(Options, required=True)
    file_kept = fields.Boolean(required=True)
    retried_by = fields.List(fields.Integer(), required=True)
    progress = fields.Nested(Progress, required=True, allow_none=True)
    summary = fields.Nested(Summary, required=True, allow_none=True)
    warnings = fields.List(fields.Nested(Warning), required=True, metadata=WARNINGS)
    dry_run_rejects = fields.List(fields.Nested(WouldReject), required=True, allow_none=True, metadata={
        "description": "A dry run's first 100 would-be rejects, in file order, kept with its record (null for "
                       "a run that is not a dry run, or one that has not read its file)."})
    url = _str()


class TargetRow(Schema):
    key = _str()
    name = _str()
    value = fields.Float(required=True)
    ts = _time()
    updated_at = _time()
    run_id = _int(allow_none=True)


class LineageEntry(Schema):
    id = _int()
    run_id = _int(allow_none=True)
    pos = _int(allow_none=True)
    line = _int(allow_none=True)
    key = _str()
    step = _str()
    at = _time()
    detail = _str()
    dead_letter_id = _int(allow_none=True)
    actor = _str(allow_none=True)


class HistoryEntry(Schema):
    id = _int()
    old_value = _time(allow_none=True)
    new_value = _time(allow_none=True)
    at = _time()
    via = _str()
    run_id = _int(allow_none=True)
    actor = _str(allow_none=True)


class Watermark(Schema):
    """A watermark; after a reset (or before the first run) its `value` is null."""

    name = _str()
    dataset = _str()
    value = _time(allow_none=True)
    updated_at = _time(allow_none=True)
    history = fields.List(fields.Nested(HistoryEntry), required=True)
    history_next = _str(allow_none=True, metadata={"pattern": CURSOR_PATTERN})
    url = _str()


class DeadLetterExport(Schema):
    """A dead letter in an export."""

    id = _int()
    run_id = _int()
    last_run_id = _int()
    pos = _int()
    line = _int(allow_none=True)
    key = _str(allow_none=True)
    error = _str(metadata={"pattern": ERROR_CODE, "description": "One of the dataset's error codes (SPEC §10)."})
    detail = _str()
    raw = _str(metadata={"description": "The record as received (JSON text, or a malformed line)."})
    status = _str(validate=validate.OneOf(list(queries.DEAD_LETTER_STATUSES)))
    created_at = _time()
    updated_at = _time()
    updated_by = _str(allow_none=True, metadata={"description": WHO + " last discarded, reopened or "
                                                                "reprocessed it."})
    attempts = _int()
    sightings = _int()
    outcome = _str(allow_none=True)
    resolved_run_id = _int(allow_none=True)
    reason = _str(allow_none=True)


class DeadLetter(DeadLetterExport):
    dataset = _str()
    url = _str()


class DeadLetterDetail(DeadLetter):
    last_raw = _str(allow_none=True, metadata={"description": "The JSON of the last failed retry."})
    history = fields.List(fields.Nested(LineageEntry), required=True)


def _next(**kwargs):
    return _str(allow_none=True, metadata={"pattern": CURSOR_PATTERN,
                                           "description": "Pass as `cursor` for the next page; null on the last."})


class RunPage(Schema):
    items = fields.List(fields.Nested(Run), required=True)
    next = _next()


ROW = {"anyOf": [{"$ref": "#/components/schemas/TargetRow"}, {
    "type": "object", "description": "A row of another dataset: its key field, its fields in order (null when "
                                     "missing), its version field, `sluice_updated_at`, `sluice_run_id`."}]}


class TargetPage(Schema):
    items = fields.List(fields.Dict(metadata=ROW), required=True)
    next = _next()


class DeadLetterPage(Schema):
    items = fields.List(fields.Nested(DeadLetter), required=True)
    next = _next()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class WatermarkList(Schema):
    items = fields.List(fields.Nested(Watermark), required=True)
    next = fields.Raw(required=True, metadata={"type": "null"})


class FieldChange(Schema):
    """One field an update changed, its values as the lineage detail writes them (strings quoted)."""

    field = _str()
    old = _str()
    new = _str()


class LineageStep(LineageEntry):
    changes = fields.List(fields.Nested(FieldChange), required=True, allow_none=True,
                          metadata={"description": "For `updated`: each changed field; null when none or not split."})
    current = fields.Boolean(required=True, metadata={"description": "This step wrote the current target row."})


class LineageGroup(Schema):
    """The steps of one run on the page (or one entry without a run), in position order."""

    run_id = _int(allow_none=True)
    at = _time()
    continued = fields.Boolean(required=True, metadata={"description": "The run began on the page before."})
    continues = fields.Boolean(required=True, metadata={"description": "The run goes on on the next page."})
    items = fields.List(fields.Nested(LineageStep), required=True)


class Lineage(Schema):
    key = _str()
    dataset = _str()
    target = fields.Dict(required=True, allow_none=True, metadata={"anyOf": [*ROW["anyOf"], {"type": "null"}]})
    items = fields.List(fields.Nested(LineageEntry), required=True,
                        metadata={"description": "The page's entries, newest first."})
    groups = fields.List(fields.Nested(LineageGroup), required=True,
                         metadata={"description": "The same entries by run, newest run first."})
    next = _next()


class ReprocessResult(Schema):
    run = fields.Nested(Summary, required=True)
    dead_letter = fields.Nested(DeadLetterDetail, required=True)


class BulkResult(Schema):
    count = _int()
    run = fields.Nested(Summary, required=True, allow_none=True)


class Preview(Schema):
    name = _str()
    value = _time(allow_none=True)
    rows_at_or_after = _int()


TARGET_FIELDS = tuple(TargetRow._declared_fields)
DEAD_LETTER_FIELDS = tuple(DeadLetterExport._declared_fields)
LINEAGE_FIELDS = tuple(LineageEntry._declared_fields)
LINEAGE_STEP_FIELDS = tuple(LineageStep._declared_fields)
HISTORY_FIELDS = tuple(HistoryEntry._declared_fields)
RUN_FIELDS = ("id", "dataset", "shape_version", "kind", "status", "source_name", "source_size", "source_sha256", "retry_of_id",
              "same_file_run_id", "dead_letter_id", "queued_at", "started_at", "finished_at",
              "file_removed_at", "cancel_requested", "error", "created_by", "cancelled_by")


# --- datasets ----------------------------------------------------------------------------------------

def _shape_components() -> dict:
    """The shape's JSON Schema as OpenAPI components: `Shape` and `ShapeField` (no `$id`, refs rewritten)."""
    def local(node):
        if isinstance(node, dict):
            return {k: ("#/components/schemas/ShapeField" if k == "$ref" else local(v))
                    for k, v in node.items() if k not in ("$schema", "$id", "$defs")}
        if isinstance(node, list):
            return [local(v) for v in node]
        return node

    return {"Shape": local(SHAPE_JSON_SCHEMA), "ShapeField": local(SHAPE_JSON_SCHEMA["$defs"]["field"])}


SHAPE_COMPONENTS = _shape_components()
SHAPE_REF = {"$ref": "#/components/schemas/Shape"}


class ShapeJson(fields.Field):
    """A shape in its plain JSON form (an object); the registry checks it against the shape's rules (422)."""

    default_error_messages: ClassVar[dict] = {"invalid": "must be a shape: an object with key, version and fields"}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        return value


def _shape_field(**kwargs) -> ShapeJson:
    return ShapeJson(metadata={"allOf": [SHAPE_REF], "description": "The shape (GET /api/datasets/shape-schema)."},
                     **kwargs)


TITLE = text(200, allow_none=True, metadata={"description": "A title (free text)."})
DESCRIPTION = text(5000, allow_none=True, metadata={"description": "A description (free text)."})


class DatasetCreateBody(Schema):
    name = text(100, required=True, metadata={
        "pattern": NAME_RE, "description": "A lowercase letter, then up to 39 lowercase letters, digits or _."})
    title = TITLE
    description = DESCRIPTION
    shape = _shape_field(required=True)


class DatasetChangeBody(Schema):
    shape = _shape_field()
    title = TITLE
    description = DESCRIPTION


class ShapeVersion(Schema):
    version = _int()
    shape = fields.Dict(required=True, metadata={"allOf": [SHAPE_REF]})
    changes = fields.List(fields.String(), required=True)
    at = _time()
    actor = _str(allow_none=True)


class DatasetInfo(Schema):
    """A dataset: its catalogue entry and its headline numbers."""

    name = _str()
    title = _str()
    description = _str()
    shape = fields.Dict(required=True, metadata={"allOf": [SHAPE_REF]})
    version = _int()
    archived_at = _time(allow_none=True)
    created_at = _time()
    table = _str(metadata={"description": "Its target table's SQL name."})
    watermark = _str(metadata={"description": "Its watermark's name."})
    watermark_value = _time(allow_none=True)
    rows = _int(metadata={"description": "Rows in its target table."})
    open_dead_letters = _int()
    url = _str()


class DatasetDetail(DatasetInfo):
    versions = fields.List(fields.Nested(ShapeVersion), required=True,
                           metadata={"description": "Its shape's versions, newest first."})


class DatasetList(Schema):
    items = fields.List(fields.Nested(DatasetInfo), required=True)
    next = fields.Raw(required=True, metadata={"type": "null"})


class Proposal(Schema):
    shape = fields.Dict(required=True, metadata={"allOf": [SHAPE_REF]})
    records_read = _int()
    notes = fields.List(fields.String(), required=True)


class ShapeDocument(Schema):
    """The JSON Schema document of a shape (its `$schema`, `properties`, `$defs`, …)."""

    class Meta:
        unknown = EXCLUDE


# --- dead-letter triage ------------------------------------------------------------------------------

MAX_SELECTION = 500  # the pipeline's MAX_SELECTION (app.pipeline.dead_letters): ids one request may list

class BulkReopenBody(BulkBody):
    """Which discarded dead letters to reopen: those a filter selects, or listed ids (not both)."""

    filter = fields.Nested(BulkFilter, allow_none=True,
                           metadata={"description": "Which discarded dead letters: all of them when empty."})
    ids = fields.List(Int(validate=validate.Range(1, MAX_ID)), validate=validate.Length(1, MAX_SELECTION), metadata={
        "description": "These dead letters, each discarded and of the dataset; `confirm` is their count. Instead "
                       "of `filter` (both: 422)."})
