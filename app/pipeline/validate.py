"""The record rules of SPEC §1: missing or invalid fields, the `value` and `ts` grammars, canonical UTC text."""
import math
import re
from datetime import UTC, datetime

MAX_KEY = 256
MAX_NAME = 1024
_TS = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:\d{2})?",
    re.ASCII,
)
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_SHOW = 60


class Invalid(Exception):
    """A record breaks a rule: `code` is the error code, the message a human-readable detail."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def show(value) -> str:
    """A short, safe rendering of a bad value for a detail message."""
    text = repr(value) if isinstance(value, str) else _json_name(value)
    text = _BAD_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= _SHOW else text[:_SHOW] + "…"


def _json_name(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def canonical(dt: datetime) -> str:
    """Canonical text of a naive UTC datetime: seconds always, microseconds only when not zero."""
    return dt.isoformat()


def parse_ts(text: str) -> str | None:
    """Return the canonical UTC text of a timestamp string, or None when it is not one."""
    m = _TS.fullmatch(text)
    if not m:
        return None
    zone = m.group(8)
    if zone and zone != "Z" and (int(zone[1:3]) > 23 or int(zone[4:6]) > 59):
        return None
    try:
        # The regex fixes the grammar; fromisoformat (C code) checks the calendar and converts.
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is not None:
            dt = (dt - dt.utcoffset()).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return dt.isoformat()


def utc_now() -> datetime:
    """Now, as a naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


def now_text() -> str:
    """Now, as canonical UTC text with microseconds (for ordering events within a second)."""
    return utc_now().strftime("%Y-%m-%dT%H:%M:%S.%f")


def ts_of(record) -> str | None:
    """The canonical `ts` of a record when it has a valid one (used for the watermark test)."""
    ts = record.get("ts")
    return parse_ts(ts.strip()) if isinstance(ts, str) else None


def _missing(record: dict, field: str, code: str) -> None:
    """Raise Invalid(code) when the field is absent, null, or blank."""
    value = record.get(field)
    if value is None:
        raise Invalid(code, f"{field} is missing" if field not in record else f"{field} is null")
    if isinstance(value, str) and not value.strip():
        raise Invalid(code, f"{field} is empty")


def _text_field(record: dict, field: str, limit: int) -> str:
    _missing(record, field, f"missing_{field}")
    value = record[field]
    if not isinstance(value, str):
        raise Invalid(f"invalid_{field}", f"{field} {show(value)} is not a string")
    value = value.strip()
    if len(value) > limit:
        raise Invalid(f"invalid_{field}", f"{field} is {len(value)} characters long; at most {limit} are allowed")
    if _BAD_CHARS.search(value):
        raise Invalid(f"invalid_{field}", f"{field} {show(value)} holds a NUL character or an unpaired surrogate")
    return value


def _value(record: dict) -> float:
    _missing(record, "value", "missing_value")
    value = record["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid("invalid_value", f"value {show(value)} is not a number")
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL.fullmatch(text):
            raise Invalid("invalid_value", f"value {show(value)} is not a number")
        value = text
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Invalid("invalid_value", f"value {show(record['value'])} is outside the range of a double")
    return number


def _timestamp(record: dict, latest: str) -> str:
    _missing(record, "ts", "missing_timestamp")
    ts = record["ts"]
    if not isinstance(ts, str):
        raise Invalid("invalid_timestamp", f"ts {show(ts)} is not a string")
    canonical_ts = parse_ts(ts.strip())
    if canonical_ts is None:
        raise Invalid("invalid_timestamp", f"ts {show(ts)} is not a timestamp like 2025-01-15T12:30:00Z")
    if canonical_ts > latest:
        raise Invalid("future_timestamp", f"ts {canonical_ts} is later than now plus the tolerance ({latest})")
    return canonical_ts


def validate(record, latest: str) -> tuple[str, str, float, str]:
    """Return (key, name, value, ts) of a valid record or raise Invalid with the first failing rule.

    `latest` is the canonical text of now plus the future tolerance.
    """
    # Fast path for the common, plainly valid record; anything unusual takes the rule-by-rule path
    # below, which alone decides the error code and detail.
    if type(record) is dict:
        key, name, value, ts = record.get("key"), record.get("name"), record.get("value"), record.get("ts")
        if type(key) is str and type(name) is str and type(ts) is str and type(value) in (int, float):
            key, name = key.strip(), name.strip()
            if (key and name and len(key) <= MAX_KEY and len(name) <= MAX_NAME
                    and key.isascii() and name.isascii() and "\x00" not in key and "\x00" not in name):
                try:
                    number = float(value)
                except OverflowError:
                    number = math.inf
                canonical_ts = parse_ts(ts.strip()) if number - number == 0 else None
                if canonical_ts is not None and canonical_ts <= latest:
                    return key, name, number, canonical_ts
    if not isinstance(record, dict):
        raise Invalid("not_an_object", f"the record is {_json_name(record) if not isinstance(record, str) else 'a string'}, "
                      "not a JSON object")
    key = _text_field(record, "key", MAX_KEY)
    name = _text_field(record, "name", MAX_NAME)
    value = _value(record)
    return key, name, value, _timestamp(record, latest)


def usable_key(record) -> str | None:
    """The record's key when it is a usable one (for a rejected record's dead letter and lineage)."""
    if not isinstance(record, dict):
        return None
    try:
        return _text_field(record, "key", MAX_KEY)
    except Invalid:
        return None
