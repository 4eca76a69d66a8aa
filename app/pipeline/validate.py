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
find_bad_char = _BAD_CHARS.search  # a match when a string holds U+0000 or an unpaired surrogate
is_decimal = _DECIMAL.fullmatch    # a match when a (trimmed) string is a decimal number of §1


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


def missing_detail(record: dict, field: str) -> str | None:
    """Why the field is missing (absent, null or blank), or None when it has a value."""
    value = record.get(field)
    if value is None:
        return f"{field} is missing" if field not in record else f"{field} is null"
    if isinstance(value, str) and not value.strip():
        return f"{field} is empty"
    return None


def _missing(record: dict, field: str, code: str) -> None:
    """Raise Invalid(code) when the field is absent, null, or blank."""
    detail = missing_detail(record, field)
    if detail is not None:
        raise Invalid(code, detail)


def check_text(value, field: str, limit: int, code: str) -> str:
    """A present value as a trimmed string of at most `limit` characters, or raise Invalid(code)."""
    if not isinstance(value, str):
        raise Invalid(code, f"{field} {show(value)} is not a string")
    value = value.strip()
    if len(value) > limit:
        raise Invalid(code, f"{field} is {len(value)} characters long; at most {limit} are allowed")
    if _BAD_CHARS.search(value):
        raise Invalid(code, f"{field} {show(value)} holds a NUL character or an unpaired surrogate")
    return value


def check_number(value, field: str, code: str) -> float:
    """A present value as a finite double (a JSON number or a decimal string), or raise Invalid(code)."""
    original = value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(code, f"{field} {show(value)} is not a number")
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL.fullmatch(text):
            raise Invalid(code, f"{field} {show(value)} is not a number")
        value = text
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Invalid(code, f"{field} {show(original)} is outside the range of a double")
    return number


def check_timestamp(value, field: str, code: str) -> str:
    """A present value as canonical UTC text, or raise Invalid(code)."""
    if not isinstance(value, str):
        raise Invalid(code, f"{field} {show(value)} is not a string")
    canonical_ts = parse_ts(value.strip())
    if canonical_ts is None:
        raise Invalid(code, f"{field} {show(value)} is not a timestamp like 2025-01-15T12:30:00Z")
    return canonical_ts


def check_not_future(canonical_ts: str, field: str, latest: str) -> str:
    """The canonical timestamp, or raise Invalid("future_timestamp") when it is later than `latest`."""
    if canonical_ts > latest:
        raise Invalid("future_timestamp", f"{field} {canonical_ts} is later than now plus the tolerance ({latest})")
    return canonical_ts


def not_an_object(record) -> Invalid:
    """The not_an_object error for a record that is not a JSON object."""
    kind = _json_name(record) if not isinstance(record, str) else "a string"
    return Invalid("not_an_object", f"the record is {kind}, not a JSON object")


def _text_field(record: dict, field: str, limit: int) -> str:
    _missing(record, field, f"missing_{field}")
    return check_text(record[field], field, limit, f"invalid_{field}")


def _value(record: dict) -> float:
    _missing(record, "value", "missing_value")
    return check_number(record["value"], "value", "invalid_value")


def _timestamp(record: dict, latest: str) -> str:
    _missing(record, "ts", "missing_timestamp")
    return check_not_future(check_timestamp(record["ts"], "ts", "invalid_timestamp"), "ts", latest)


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
        raise not_an_object(record)
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
