"""Datasets: the list; a new one from a form of fields or from a shape proposed from a sample file; a
dataset's shape, its versions, the changes it allows (evolve) and archiving it.

Everyone may read these pages; creating, changing and archiving are for administrators (SPEC §11).
"""
import json
import re
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for

from .. import queries
from ..config import pipeline_settings
from ..datasets.propose import propose_shape
from ..datasets.registry import (
    DatasetError,
    archive_dataset,
    create_dataset,
    evolve_dataset,
    get_dataset,
    shape_versions,
)
from ..datasets.shape import NAME_RE, ShapeError
from ..extensions import db
from ..pipeline import InputError
from ..pipeline.extract import Reader
from .auth import ADMIN, VIEWER, current_actor, requires
from .forms import MORE_ROWS, ActionForm, DatasetForm, EvolveForm, ProposeForm

bp = Blueprint("datasets", __name__, url_prefix="/datasets")

_PLACE = re.compile(r"\bfields\[(\d+)\]")


def _dataset_or_404(conn, name: str):
    if not re.fullmatch(NAME_RE, name):
        abort(404, f"There is no dataset {name[:100]!r}.")
    try:
        return get_dataset(conn, name)
    except DatasetError:
        abort(404, f"There is no dataset {name!r}.")


@bp.get("")
@requires(VIEWER)
def index():
    """Every dataset with its numbers; a link to create one."""
    with db.engine.connect() as conn:
        datasets = queries.datasets_overview(conn)
    return render_template("datasets/index.html", datasets=datasets)


# --- a new dataset ---------------------------------------------------------------------------------

def _field_of_row(f, *, required: bool) -> dict | None:
    """A payload field's plain JSON from a row of fields (None for a row without a name)."""
    name = (f.name.data or "").strip()
    if not name:
        return None
    item = {"name": name, "type": f.type.data, "required": required}
    if f.max_length.data is not None:
        item["max_length"] = f.max_length.data
    item["sortable"] = bool(f.sortable.data)
    if f.searchable.data:
        item["searchable"] = True
    return item


def _shape_from_rows(form: DatasetForm) -> dict:
    """The plain JSON shape the form's fields describe (rows without a name are left out)."""
    fields = []
    for row in form.fields:
        if item := _field_of_row(row.form, required=bool(row.form.required.data)):
            fields.append(item)
    return {"key": (form.key.data or "").strip(), "version": (form.version.data or "").strip(), "fields": fields}


def _named_places(message: str, shape: dict) -> str:
    """A shape error with each `fields[i]` followed by that field's name, as the form shows rows by name."""
    fields = shape.get("fields") if isinstance(shape, dict) else None

    def name(match):
        i = int(match.group(1))
        if isinstance(fields, list) and i < len(fields) and isinstance(fields[i], dict) \
                and isinstance(fields[i].get("name"), str):
            return f"{match.group(0)} ({fields[i]['name'][:63]!r})"
        return match.group(0)

    return _PLACE.sub(name, message)


def _fill(form: DatasetForm, shape: dict, empty_rows: int = 3) -> None:
    """Put a plain JSON shape into the form's key, version and field rows (and its JSON box)."""
    form.key.data, form.version.data = shape.get("key", ""), shape.get("version", "")
    while len(form.fields.entries):
        form.fields.pop_entry()
    for item in shape.get("fields", []):
        form.fields.append_entry(item)
    for _ in range(empty_rows):
        form.fields.append_entry()
    form.shape_json.data = json.dumps(shape, indent=2, ensure_ascii=False)


def _new_page(form: DatasetForm, status: int = 200, **extra):
    return render_template("datasets/new.html", form=form, propose_form=extra.pop("propose_form", ProposeForm()),
                           **extra), status


@bp.get("/new")
@requires(ADMIN)
def new():
    """The form for a new dataset: fields by hand, or a sample file to propose them from."""
    return _new_page(DatasetForm())


@bp.post("/new")
@requires(ADMIN)
def create():
    """Create a dataset from the form's fields (or its JSON); on a refusal, the form again with the reason."""
    form = DatasetForm()
    if form.more.data:
        for _ in range(MORE_ROWS):
            form.fields.append_entry()
        return _new_page(form)
    if not form.validate_on_submit():
        return _new_page(form, 400, errors=[f"{form[name].label.text}: {' '.join(_flat(messages))}"
                                            for name, messages in form.errors.items()])
    from_json = bool(form.create_from_json.data)
    if from_json:
        try:
            shape = json.loads(form.shape_json.data or "")
        except ValueError as exc:
            return _new_page(form, 400, errors=[f"Shape as JSON: not JSON ({exc})."], json_open=True)
    else:
        shape = _shape_from_rows(form)
    name = (form.name.data or "").strip()
    if not name:
        return _new_page(form, 400, errors=[("Name: give the dataset a name (a lowercase letter, then up to 39 "
                                            "lowercase letters, digits or _).")], json_open=from_json)
    try:
        with db.engine.connect() as conn:
            dataset = create_dataset(conn, name, shape, title=form.title.data or "",
                                     description=form.description.data or "", actor=current_actor())
    except (DatasetError, ShapeError) as exc:
        return _new_page(form, 409 if getattr(exc, "code", "") == "conflict" else 400,
                         errors=[_named_places(str(exc), shape)], json_open=from_json)
    flash(f"Dataset {dataset.name} created, with its table {dataset.table.name}. Upload a file to it "
          "from the home page.", "ok")
    return redirect(url_for("datasets.show", name=dataset.name), 303)


def _flat(messages) -> list[str]:
    """WTForms errors of a field, of a FieldList of forms too, as lines."""
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flat(v)]
    out = []
    for i, m in enumerate(messages):
        out += [f"row {i + 1}: {x}" for x in _flat(m)] if isinstance(m, dict) else ([m] if m else [])
    return out


def _suggested_name(filename: str | None) -> str:
    stem = re.sub(r"[^a-z0-9_]+", "_", Path(filename or "").name.split(".")[0].lower()).strip("_")
    stem = re.sub(r"^[^a-z]+", "", stem)[:40]
    return stem if re.fullmatch(NAME_RE, stem or "-") else ""


@bp.post("/new/propose")
@requires(ADMIN)
def propose():
    """Read a sample file, propose a shape from its first records, and show it in the new-dataset form to edit."""
    propose_form = ProposeForm()
    form = DatasetForm(formdata=None)
    if not propose_form.validate_on_submit():
        return _new_page(form, 400, propose_form=propose_form, propose_errors=["The form expired; try again."])
    sample = propose_form.sample.data
    if not getattr(sample, "filename", ""):
        return _new_page(form, 400, propose_form=propose_form, propose_errors=["Choose a sample file."])
    settings = pipeline_settings(current_app.config)
    try:
        reader = Reader(sample.stream, settings.max_decompressed_bytes, settings.max_upload_bytes,
                        max_record=settings.max_record_bytes)
        proposal = propose_shape(iter(reader))
    except InputError as exc:
        return _new_page(form, 400, propose_form=propose_form,
                         propose_errors=[f"{sample.filename}: not JSON, JSON Lines or gzip ({exc})."])
    except IndexError:
        # The reader (app/pipeline/extract.py) raises this on an array cut short (`[` or `[1,`): reported.
        return _new_page(form, 400, propose_form=propose_form,
                         propose_errors=[(f"{sample.filename}: not JSON, JSON Lines or gzip (the file ends "
                                         "inside an array).")])
    except ShapeError as exc:
        return _new_page(form, 400, propose_form=propose_form, propose_errors=[f"{sample.filename}: {exc}"])
    # Nothing is created yet: the proposal is shown for editing (so no redirect), and "Create" posts it.
    _fill(form, proposal["shape"])
    form.name.data = _suggested_name(sample.filename)
    return _new_page(form, proposal=proposal, sample_name=sample.filename)


# --- one dataset ------------------------------------------------------------------------------------

def _evolve_form(dataset, formdata=None) -> EvolveForm:
    if formdata is not None:
        return EvolveForm(formdata)
    form = EvolveForm(formdata=None, title=dataset.title, description=dataset.description)
    for f in dataset.shape.fields:
        form.existing.append_entry({"name": f.name, "max_length": f.max_length, "sortable": f.sortable,
                                    "searchable": f.searchable})
    return form


def _show(dataset, form: EvolveForm, status: int = 200, **extra):
    with db.engine.connect() as conn:
        versions = shape_versions(conn, dataset.name)
        numbers = next(d for d in queries.datasets_overview(conn) if d["name"] == dataset.name)
    g.dataset = dataset  # the header's links go to this dataset's pages
    return render_template("datasets/show.html", ds=dataset, versions=versions, numbers=numbers, form=form,
                           action_form=ActionForm(), columns=queries.target_columns(dataset),
                           sorts=list(queries.target_sorts(dataset)), **extra), status


@bp.get("/<name>")
@requires(VIEWER)
def show(name: str):
    """A dataset: its shape, numbers, versions, the form of allowed changes, and archive."""
    with db.engine.connect() as conn:
        dataset = _dataset_or_404(conn, name)
    return _show(dataset, _evolve_form(dataset))


def _evolved_shape(dataset, form: EvolveForm) -> dict:
    """The old shape with the form's changes: longer strings, new indexes, optional fields at the end."""
    rows = {r.form.name.data: r.form for r in form.existing}
    fields = []
    for f in dataset.shape.fields:
        item = f.to_dict()
        row = rows.get(f.name)
        if row is not None:
            if f.type == "string" and row.max_length.data is not None:
                item["max_length"] = row.max_length.data
            item["sortable"] = f.sortable or bool(row.sortable.data)
            if f.type == "string":
                item["searchable"] = f.searchable or bool(row.searchable.data)
            elif row.searchable.data:
                item["searchable"] = True  # refused by the shape's rules, with a message that says so
        fields.append(item)
    for r in form.added:
        if item := _field_of_row(r.form, required=False):  # an added field is optional
            fields.append(item)
    return {"key": dataset.shape.key, "version": dataset.shape.version, "fields": fields}


@bp.post("/<name>")
@requires(ADMIN)
def evolve(name: str):
    """Save the allowed changes as a new version of the dataset; on a refusal, the form again with the reason."""
    with db.engine.connect() as conn:
        dataset = _dataset_or_404(conn, name)
    form = _evolve_form(dataset, request.form)
    if form.more.data:
        for _ in range(MORE_ROWS):
            form.added.append_entry()
        return _show(dataset, form)
    if not form.validate_on_submit():
        return _show(dataset, form, 400, errors=[f"{form[n].label.text}: {' '.join(_flat(m))}"
                                                 for n, m in form.errors.items()])
    shape = _evolved_shape(dataset, form)
    changed_shape = shape != dataset.shape.to_dict()
    try:
        with db.engine.connect() as conn:
            new = evolve_dataset(conn, name, shape=shape if changed_shape else None, title=form.title.data or "",
                                 description=form.description.data or "", actor=current_actor())
            changes = shape_versions(conn, name)[0]["changes"] if new.version != dataset.version else []
    except (DatasetError, ShapeError) as exc:
        return _show(dataset, form, 409 if getattr(exc, "code", "") in ("conflict", "archived") else 400,
                     errors=[_named_places(str(exc), shape)])
    if changes:
        flash(f"Dataset {name} is now at version {new.version}: " + "; ".join(changes) + ".", "ok")
    else:
        flash("Nothing changed.", "ok")
    return redirect(url_for("datasets.show", name=name), 303)


@bp.get("/<name>/archive")
@requires(ADMIN)
def archive_confirm(name: str):
    """Ask to confirm archiving a dataset."""
    with db.engine.connect() as conn:
        dataset = _dataset_or_404(conn, name)
        numbers = next(d for d in queries.datasets_overview(conn) if d["name"] == dataset.name)
    g.dataset = dataset
    return render_template("datasets/archive.html", ds=dataset, numbers=numbers, form=ActionForm())


@bp.post("/<name>/archive")
@requires(ADMIN)
def archive(name: str):
    """Archive a dataset: no new runs; its pages stay readable."""
    if not ActionForm().validate_on_submit():
        abort(400)
    with db.engine.connect() as conn:
        _dataset_or_404(conn, name)
        try:
            archive_dataset(conn, name, actor=current_actor())
            flash(f"Dataset {name} archived: it takes no new runs; its pages stay readable.", "ok")
        except DatasetError as exc:
            flash(f"Dataset {name} was not archived: {exc}", "error")
    return redirect(url_for("datasets.show", name=name), 303)

