"""Datasets over the API: list, create, one with its shape versions, evolve, archive, propose a shape, the schema.

Reads are a viewer's; create, evolve, archive and propose are an administrator's (SPEC §11).
"""
import itertools

from flask import current_app, jsonify, request, url_for

from ... import queries
from ...config import pipeline_settings
from ...datasets.propose import propose_shape
from ...datasets.registry import archive_dataset, create_dataset, evolve_dataset, shape_versions
from ...datasets.shape import NAME_RE, SHAPE_JSON_SCHEMA, ShapeError
from ...extensions import db
from ...pipeline import InputError, TooLarge
from ...pipeline.extract import Reader, sniff
from ..auth import ADMIN, VIEWER, current_actor, requires
from ..filters import current_dataset
from . import schemas
from .blueprint import ApiError, bp, errors, read
from .links import DATASET_LINKS, DATASET_PAGE_LINKS
from .runs import UPLOAD_BODY

PROPOSE_RECORDS = 10_000  # what propose_shape reads at most (SPEC §10)
NAME = [{"in": "path", "name": "name", "required": True, "description": "The dataset's name.",
         "schema": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NAME_RE}}]
LOCATION = {"Location": {"description": "The dataset's URL.", "schema": {"type": "string"}}}


def dataset_json(numbers: dict, versions: list | None = None) -> dict:
    """A dataset as the API shows it: its catalogue entry, its numbers, and (in detail) its versions."""
    out = numbers["dataset"].to_dict()
    out.update(watermark_value=numbers["watermark"], rows=numbers["target_rows"],
               open_dead_letters=numbers["open_dead_letters"], url=url_for("api.get_dataset", name=out["name"]))
    if versions is not None:
        out["versions"] = versions
    return out


def _detail(name: str) -> dict:
    """The dataset's detail JSON (404 `unknown_dataset` when there is none)."""
    ds = current_dataset(name)

    def both(conn):
        numbers = next(d for d in queries.datasets_overview(conn) if d["name"] == ds.name)
        return numbers, shape_versions(conn, ds.name)

    numbers, versions = read(both)
    return dataset_json(numbers, versions)


@bp.get("/datasets")
@requires(VIEWER)
@bp.response(200, schemas.DatasetList, description="Every dataset, events first, archived ones too.")
@bp.doc(responses={200: {"links": DATASET_PAGE_LINKS}})
@errors(503)
def list_datasets():
    """Every dataset with its shape, target rows, open dead letters and watermark."""
    return jsonify({"items": [dataset_json(d) for d in read(queries.datasets_overview)], "next": None})


@bp.post("/datasets")
@requires(ADMIN)
@bp.arguments(schemas.DatasetCreateBody, as_kwargs=True)
@bp.response(201, schemas.DatasetDetail, description="The new dataset, with its empty table.", headers=LOCATION)
@bp.doc(responses={201: {"links": DATASET_LINKS}})
@errors(403, 409, 413, 415, 422, 503)
def create_dataset_view(name: str, shape: dict, title=None, description=None):
    """Create a dataset from a name and a shape: 422 for a name or shape the rules refuse, 409 for a taken name."""
    with db.engine.connect() as conn:
        create_dataset(conn, name, shape, title=title or "", description=description or "", actor=current_actor())
    response = jsonify(_detail(name))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_dataset", name=name)
    return response


@bp.get("/datasets/shape-schema")
@requires(VIEWER)
@bp.response(200, schemas.ShapeDocument, description="The JSON Schema (2020-12) of a shape's plain JSON form.")
def shape_schema():
    """The JSON Schema a shape's plain JSON form follows (the rules beyond it are checked on create: 422)."""
    return jsonify(SHAPE_JSON_SCHEMA)


@bp.route("/datasets/<name>", methods=["GET"], parameters=NAME)
@requires(VIEWER)
@bp.response(200, schemas.DatasetDetail, description="The dataset with its shape's versions, newest first.")
@errors(404, 503)
def get_dataset(name: str):
    """One dataset: its shape, numbers and shape versions."""
    return jsonify(_detail(name))


@bp.route("/datasets/<name>", methods=["PATCH"], parameters=NAME)
@requires(ADMIN)
@bp.arguments(schemas.DatasetChangeBody, as_kwargs=True)
@bp.response(200, schemas.DatasetDetail, description="The dataset; a new version when something changed.")
@bp.doc(responses={200: {"links": DATASET_LINKS}})
@errors(403, 404, 409, 413, 415, 422, 503)
def change_dataset(name: str, shape=None, title=None, description=None):
    """Evolve a dataset: a new shape (allowed changes only), title or description; each change is a new version.

    Allowed: add an optional field, raise a string's max_length, make a field sortable or searchable.
    Anything else answers 409 `conflict` saying why and what to do instead; a shape that breaks the
    rules, 422 `invalid`; an archived dataset, 409 `archived`.
    """
    current_dataset(name)
    with db.engine.connect() as conn:
        evolve_dataset(conn, name, shape=shape, title=title, description=description, actor=current_actor())
    return jsonify(_detail(name))


@bp.route("/datasets/<name>/archive", methods=["POST"], parameters=NAME)
@requires(ADMIN)
@bp.response(200, schemas.DatasetDetail, description="The dataset, archived: readable, no new runs.")
@errors(403, 404, 409, 503)
def archive_dataset_view(name: str):
    """Archive a dataset: it takes no new runs; its data stays readable (events cannot be archived: 409)."""
    current_dataset(name)
    with db.engine.connect() as conn:
        archive_dataset(conn, name, actor=current_actor())
    return jsonify(_detail(name))


class _Head:
    """A forward-only stream that can be rewound over its first bytes (the reader peeks at them)."""

    def __init__(self, stream, size: int = 64):
        self.stream, self.head, self.pos = stream, stream.read(size), 0

    def read(self, n: int = -1) -> bytes:
        if self.pos < len(self.head):
            part = self.head[self.pos:] if n < 0 else self.head[self.pos:self.pos + n]
            self.pos += len(part)
            rest = b"" if n >= 0 and len(part) >= n else self.stream.read(-1 if n < 0 else n - len(part))
            self.pos += len(rest)
            return part + rest
        data = self.stream.read(n)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset > len(self.head) or self.pos > len(self.head):
            raise OSError("this stream can only be rewound to its start before reading past its first bytes")
        self.pos = offset
        return offset

    def tell(self) -> int:
        return self.pos


@bp.before_app_request
def _sample_limit() -> None:
    """A sample file may be as large as an upload (only its first records are read)."""
    if request.endpoint == "api.propose_dataset":
        request.max_content_length = current_app.config["SLUICE_MAX_UPLOAD_BYTES"]


@bp.post("/datasets/propose")
@requires(ADMIN)
@bp.response(200, schemas.Proposal, description="The proposed shape, the records read and notes.")
@bp.doc(requestBody={**UPLOAD_BODY, "description": "A sample file as for POST /api/runs: a multipart "
                     "field `file`, or the raw body (JSON, JSON Lines, or gzip of either). Its first 10,000 "
                     "records are read."})
@errors(400, 403, 413, 415, 422, 503)
def propose_dataset():
    """Propose a shape from a sample file's first records (at most 10,000); nothing is created."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "bad_request", "send the sample as the multipart field 'file'")
        stream = upload.stream
    elif request.mimetype in schemas.RAW_UPLOAD_TYPES:
        stream = _Head(request.stream)
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send the sample as multipart field 'file', or as the body with Content-Type "
                       + ", ".join(schemas.RAW_UPLOAD_TYPES))
    settings = pipeline_settings(current_app.config)
    try:
        head = stream.read(64)
        stream.seek(0)
        why = sniff(head)
        if why:
            raise ApiError(415, "not_json", why)
        reader = Reader(stream, settings.max_decompressed_bytes, settings.max_upload_bytes,
                        max_record=settings.max_record_bytes)
        proposal = propose_shape(itertools.islice(iter(reader), PROPOSE_RECORDS))
    except TooLarge as exc:
        raise ApiError(413, "too_large", str(exc)) from None
    except InputError as exc:
        raise ApiError(422, "unreadable", f"the sample cannot be read: {exc}") from None
    except ShapeError as exc:
        raise ApiError(422, "no_shape", str(exc)) from None
    return jsonify(proposal)
