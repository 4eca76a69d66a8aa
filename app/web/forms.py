"""The dashboard's forms (Flask-WTF, so every one carries a CSRF token)."""
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DecimalField,
    FieldList,
    FileField,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    MultipleFileField,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from ..datasets.shape import FIELD_TYPES, MAX_MAX_LENGTH
from ..queries import storable


def storable_text(form, field) -> None:
    """Refuse text no database row can hold (NUL, a lone surrogate): PostgreSQL would refuse it at the UPDATE."""
    if field.data and not storable(field.data):
        raise ValidationError("must not contain NUL characters")


class UploadForm(FlaskForm):
    """One or more files and the run options of SPEC §2."""

    dataset = SelectField("Dataset", default="events", validate_choice=False)
    files = MultipleFileField("Files (JSON, JSON Lines, or gzip of either)")
    ignore_watermark = BooleanField("Backfill: ignore the watermark (load late records)")
    max_reject_percent = DecimalField("Reject threshold (% of records, blank for none)", places=None,
                                      validators=[Optional(), NumberRange(0, 100)])
    dry_run = BooleanField("Dry run: compute and report, keep nothing")


class SignInForm(FlaskForm):
    """A user name and a password."""

    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = StringField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class ActionForm(FlaskForm):
    """A button that changes state (cancel, retry, reprocess, reopen): only the CSRF token."""


class DiscardForm(FlaskForm):
    """Discard a dead letter with an optional reason."""

    reason = StringField("Reason (optional)", validators=[Optional(), Length(max=500), storable_text])


class EditForm(FlaskForm):
    """Edit a dead letter's record as JSON and retry it."""

    raw = TextAreaField("Record (JSON)", validators=[DataRequired(message="the edited record is empty")])


class BulkForm(FlaskForm):
    """A confirmed bulk action on the dead letters a filter selects, or on picked ones (`ids`) of its view."""

    action = HiddenField(validators=[DataRequired()])
    error = HiddenField()
    run = HiddenField()
    status = HiddenField()
    q = HiddenField()
    key = HiddenField()
    # Rendered as hidden inputs by the template; a value that is not an integer fails the form.
    ids = SelectMultipleField(coerce=int, validate_choice=False)
    confirm = IntegerField("Count", validators=[InputRequired()])
    reason = StringField("Reason (optional)", validators=[Optional(), Length(max=500), storable_text])


class WatermarkForm(FlaskForm):
    """Set the watermark to a confirmed value."""

    value = HiddenField(validators=[DataRequired()])


class ResetForm(FlaskForm):
    """Reset (remove) the watermark."""


# --- datasets ---------------------------------------------------------------------------------------

EMPTY_FIELD_ROWS = 6  # a new dataset's form has at least this many empty field rows
MORE_ROWS = 5         # "More field rows" adds this many


class NewFieldRow(Form):
    """A payload field added to a shape: optional (a plain Form: the CSRF token is the outer form's)."""

    name = StringField("Field name", validators=[Optional(), Length(max=63), storable_text])
    type = SelectField("Type", choices=[SelectChoice(t) for t in FIELD_TYPES], default="string")
    max_length = IntegerField("Max length", validators=[Optional(), NumberRange(1, MAX_MAX_LENGTH)])
    sortable = BooleanField("Sortable")
    searchable = BooleanField("Searchable")


class FieldRow(NewFieldRow):
    """One payload field of a new dataset's shape, which may be required."""

    required = BooleanField("Required")


class DatasetForm(FlaskForm):
    """A new dataset: name, title, description, key and version fields, a table of payload fields, or its JSON."""

    name = StringField("Name", validators=[Optional(), Length(max=40), storable_text])
    title = StringField("Title", validators=[Optional(), Length(max=200), storable_text])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000), storable_text])
    key = StringField("Key field (a string, at most 256 characters: the upsert key)",
                      validators=[Optional(), Length(max=63), storable_text])
    version = StringField("Version field (a timestamp: watermark, stale rule, in-run winner)",
                          validators=[Optional(), Length(max=63), storable_text])
    fields = FieldList(FormField(FieldRow), min_entries=EMPTY_FIELD_ROWS, max_entries=200)
    shape_json = TextAreaField("Shape as JSON", validators=[Optional(), Length(max=200_000), storable_text])
    create = SubmitField("Create dataset")
    create_from_json = SubmitField("Create from this JSON")
    more = SubmitField("More field rows")


class ProposeForm(FlaskForm):
    """A sample file to propose a shape from."""

    sample = FileField("Sample file (JSON, JSON Lines, or gzip of either; the first 10,000 records are read)")


class ExistingFieldRow(Form):
    """What may change in a field a shape has: a longer max_length, sortable, searchable."""

    name = HiddenField()
    max_length = IntegerField("Max length", validators=[Optional(), NumberRange(1, MAX_MAX_LENGTH)])
    sortable = BooleanField("Sortable")
    searchable = BooleanField("Searchable")




class EvolveForm(FlaskForm):
    """The allowed changes of a dataset: title, description, longer strings, new indexes, new optional fields."""

    title = StringField("Title", validators=[Optional(), Length(max=200), storable_text])
    description = TextAreaField("Description", validators=[Optional(), Length(max=2000), storable_text])
    existing = FieldList(FormField(ExistingFieldRow), max_entries=100)
    added = FieldList(FormField(NewFieldRow), min_entries=3, max_entries=200)
    save = SubmitField("Save as a new version")
    more = SubmitField("More new field rows")


def _same_as_new(form, field) -> None:
    """The repeated password equals the new one."""
    if field.data != form.new.data:
        raise ValidationError("the two passwords differ")


class SetupForm(FlaskForm):
    """The first administrator: a user name and a new password, typed twice."""

    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    new = StringField("Password", validators=[DataRequired(), Length(max=1024)])
    again = StringField("Password again", validators=[DataRequired(), _same_as_new])


class PasswordForm(FlaskForm):
    """Change one's own password: the current one, and the new one twice."""

    current = StringField("Current password", validators=[DataRequired(), Length(max=1024)])
    new = StringField("New password", validators=[DataRequired(), Length(max=1024)])
    again = StringField("New password again", validators=[DataRequired(), _same_as_new])


class TokenForm(FlaskForm):
    """A new API token: a name, a role (choices: the roles up to one's own) and an optional expiry."""

    name = StringField("Name", validators=[DataRequired(), Length(max=64), storable_text])
    role = SelectField("Role")
    expires_days = IntegerField("Expires after (days, blank for never)", validators=[Optional()])


class NewUserForm(FlaskForm):
    """A new user: a name, a role and an initial password, typed twice."""

    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    role = SelectField("Role")
    new = StringField("Initial password", validators=[DataRequired(), Length(max=1024)])
    again = StringField("Initial password again", validators=[DataRequired(), _same_as_new])


class RoleForm(FlaskForm):
    """A user's new role."""

    role = SelectField("Role")
