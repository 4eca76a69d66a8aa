"""The dashboard's forms (Flask-WTF, so every one carries a CSRF token)."""
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DecimalField,
    HiddenField,
    IntegerField,
    MultipleFileField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from ..queries import storable


def storable_text(form, field) -> None:
    """Refuse text no database row can hold (NUL, a lone surrogate): PostgreSQL would refuse it at the UPDATE."""
    if field.data and not storable(field.data):
        raise ValidationError("must not contain NUL characters")


class UploadForm(FlaskForm):
    """One or more files and the run options of SPEC §2."""

    files = MultipleFileField("Files (JSON, JSON Lines, or gzip of either)")
    ignore_watermark = BooleanField("Backfill: ignore the watermark (load late records)")
    max_reject_percent = DecimalField("Reject threshold (% of records, blank for none)", places=None,
                                      validators=[Optional(), NumberRange(0, 100)])
    dry_run = BooleanField("Dry run: compute and report, keep nothing")


class ActionForm(FlaskForm):
    """A button that changes state (cancel, retry, reprocess, reopen): only the CSRF token."""


class DiscardForm(FlaskForm):
    """Discard a dead letter with an optional reason."""

    reason = StringField("Reason (optional)", validators=[Optional(), Length(max=500), storable_text])


class EditForm(FlaskForm):
    """Edit a dead letter's record as JSON and retry it."""

    raw = TextAreaField("Record (JSON)", validators=[DataRequired(message="the edited record is empty")])


class BulkForm(FlaskForm):
    """A confirmed bulk action on the dead letters a filter selects."""

    action = HiddenField(validators=[DataRequired()])
    error = HiddenField()
    run = HiddenField()
    confirm = IntegerField("Count", validators=[InputRequired()])
    reason = StringField("Reason (optional)", validators=[Optional(), Length(max=500), storable_text])


class WatermarkForm(FlaskForm):
    """Set the watermark to a confirmed value."""

    value = HiddenField(validators=[DataRequired()])


class ResetForm(FlaskForm):
    """Reset (remove) the watermark."""
