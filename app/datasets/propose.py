"""Proposing a shape from a sample of records (SPEC §10): field types, required, key and version."""
import re
from collections.abc import Iterable
from itertools import islice

from app.pipeline.extract import Unreadable
from app.pipeline.validate import Invalid, find_bad_char, is_decimal, parse_ts, show

from .shape import (
    DEFAULT_MAX_LENGTH,
    FIELD_RE,
    KEY_MAX_LENGTH,
    MAX_FIELDS,
    MAX_MAX_LENGTH,
    RESERVED,
    RESERVED_PREFIX,
    ShapeError,
    parse_shape,
)
from .validator import INT_MAX, INT_MIN, check_integer

MAX_SAMPLE = 10_000
# Preferred names, best first; any other qualifying field comes after them, in the order first seen.
KEY_NAMES = ("id", "key", "*_id", "uuid")
VERSION_NAMES = ("updated_at", "ts", "timestamp", "modified", "modified_at", "last_modified", "updated",
                 "time", "created_at")


class _Seen:
    """What the sample showed of one field."""

    __slots__ = (
        "bad_text",
        "blank",
        "bool",
        "count",
        "decimals",
        "float",
        "int",
        "int_range",
        "integers",
        "key_ok",
        "keys",
        "longest",
        "nested",
        "null",
        "other_text",
        "timestamps",
    )

    def __init__(self):
        self.count = 0  # object records with the field
        self.null = self.blank = 0
        self.bool = self.int = self.float = self.nested = 0
        self.timestamps = self.other_text = 0  # non-blank strings that do / do not parse as timestamps
        self.bad_text = 0  # strings with U+0000 or an unpaired surrogate
        self.decimals = self.integers = 0  # strings that a number / an integer field accepts
        self.longest = 0  # characters of the longest trimmed string
        self.int_range = True  # every integer fits in 64 bits
        self.keys: set | None = set()  # the distinct trimmed strings while they can still make a key
        self.key_ok = True

    def add(self, value) -> None:
        self.count += 1
        if value is None:
            self.null += 1
            self.key_ok = False
        elif value is True or value is False:
            self.bool += 1
            self.key_ok = False
        elif isinstance(value, int):
            self.int += 1
            self.key_ok = False
            if not INT_MIN <= value <= INT_MAX:
                self.int_range = False
        elif isinstance(value, float):
            self.float += 1
            self.key_ok = False
        elif isinstance(value, str):
            text = value.strip()
            if not text:
                self.blank += 1
                self.key_ok = False
                return
            self.longest = max(self.longest, len(text))
            if (not text.isascii() or "\x00" in text) and find_bad_char(text):
                self.bad_text += 1
                self.key_ok = False
            if is_decimal(text):
                self.decimals += 1
                if _is_integer(text):
                    self.integers += 1
            # One string that is not a timestamp settles it: the rest need no parsing.
            if not self.other_text and parse_ts(text) is not None:
                self.timestamps += 1
            else:
                self.other_text += 1
            if self.key_ok:
                if len(text) > KEY_MAX_LENGTH or text in self.keys:
                    self.key_ok = False
                else:
                    self.keys.add(text)
        else:
            self.nested += 1
            self.key_ok = False
        if not self.key_ok:
            self.keys = None

    @property
    def strings(self) -> int:
        return self.timestamps + self.other_text

    @property
    def present(self) -> int:
        """Values that are not missing for a typed field (absent, null and blank are missing)."""
        return self.bool + self.int + self.float + self.nested + self.strings

    def type(self) -> tuple[str, str | None]:
        """The proposed type, and a note when the choice needs one."""
        kinds = [k for k in ("bool", "int", "float", "nested", "strings") if getattr(self, k)]
        if not kinds:
            return "json", "was missing, null or empty in every record: proposed as json, which accepts anything"
        if kinds == ["bool"]:
            return "boolean", None
        if kinds == ["int"]:
            if self.int_range:
                return "integer", None
            return "number", "holds integers beyond 64 bits: proposed as number (a double)"
        if set(kinds) <= {"int", "float"}:
            return "number", None
        if set(kinds) <= {"int", "float", "strings"} and len(kinds) > 1 and self.decimals == self.strings:
            # Numbers, some written as strings ("3.5"): a number field accepts both. Strings alone
            # (zip codes, "007") stay strings.
            if kinds == ["int", "strings"] and self.integers == self.strings and self.int_range:
                return "integer", None
            return "number", None
        if kinds == ["strings"]:
            if self.bad_text:
                return "json", ("holds a NUL character or an unpaired surrogate, which a string refuses: "
                                "proposed as json")
            if self.longest > MAX_MAX_LENGTH:
                return "json", f"holds strings longer than {MAX_MAX_LENGTH:,} characters: proposed as json"
            if not self.other_text:
                return "timestamp", None
            return "string", None
        if "nested" in kinds:
            return "json", None
        note = f"holds values of several types ({', '.join(_KIND_WORDS[k] for k in kinds)}): proposed as json"
        if set(kinds) <= {"int", "float", "strings"}:
            odd = self.strings - self.decimals
            note += (f"; {odd:,} of its strings are not numbers: with type number, records like those "
                     "would be rejected as dead letters")
        return "json", note

    def required(self, type_: str, objects: int) -> bool:
        if self.count < objects:
            return False
        if type_ == "json":  # for json only absent and null are missing
            return not self.null
        return not (self.null or self.blank)


_KIND_WORDS = {"bool": "booleans", "int": "integers", "float": "decimal numbers", "nested": "objects or arrays",
               "strings": "strings"}


def _is_integer(text: str) -> bool:
    try:
        check_integer(text, "", "")
    except Invalid:
        return False
    return True


def _max_length(longest: int) -> int:
    """Room above the longest string seen: the default 1,024, or the next power of two."""
    if longest <= DEFAULT_MAX_LENGTH:
        return DEFAULT_MAX_LENGTH
    return min(MAX_MAX_LENGTH, 1 << (longest - 1).bit_length())


def _preference(name: str, preferred: tuple[str, ...]) -> int:
    for rank, pattern in enumerate(preferred):
        if name == pattern or (pattern.startswith("*") and name.endswith(pattern[1:])):
            return rank
    return len(preferred)


def _pick(candidates: list[str], preferred: tuple[str, ...]) -> str | None:
    # min() keeps the first of equally preferred names: the order in which the sample showed them.
    return min(candidates, key=lambda n: _preference(n, preferred), default=None)


def propose_shape(records: Iterable) -> dict:
    """Propose a shape from at most 10,000 records (items with `.value`, or plain values).

    Returns {"shape": plain JSON shape, "records_read": n, "notes": [...]}; raises ShapeError with
    why when no shape can be proposed (no object, no key candidate, no timestamp field).
    """
    seen: dict[str, _Seen] = {}
    objects = not_objects = unreadable = read = 0
    for item in islice(records, MAX_SAMPLE):
        read += 1
        value = getattr(item, "value", item) if not isinstance(item, dict) else item
        if isinstance(value, Unreadable):
            unreadable += 1
            continue
        if not isinstance(value, dict):
            not_objects += 1
            continue
        for name, field_value in value.items():
            stats = seen.get(name)
            if stats is None:
                stats = seen[name] = _Seen()
            stats.add(field_value)
        objects += 1

    notes = []
    if read == MAX_SAMPLE:
        notes.append(f"read the first {MAX_SAMPLE:,} records only")
    if unreadable:
        notes.append(f"{unreadable:,} record(s) could not be read (malformed JSON or too large) "
                     "and were not used")
    if not_objects:
        notes.append(f"{not_objects:,} record(s) are not JSON objects and were not used")
    if not objects:
        raise ShapeError(f"no shape can be proposed: none of the {read:,} records read is a JSON object")

    usable = {}
    for name, stats in seen.items():
        if not isinstance(name, str) or not re.fullmatch(FIELD_RE, name):
            notes.append(f"left out {show(name)}: not a valid field name (a lowercase letter or _, "
                         "then up to 62 lowercase letters, digits or _)")
        elif name in RESERVED or name.startswith(RESERVED_PREFIX):
            notes.append(f"left out {show(name)}: names starting with sluice_ are reserved")
        else:
            usable[name] = stats

    key = _choose_key(usable, objects, notes)
    version = _choose_version(usable, objects, key)
    notes.append(f"proposed key: {key!r} (a distinct string in every record)")
    notes.append(f"proposed version: {version!r} (a timestamp in every record)")

    fields = []
    for name, stats in usable.items():
        if name in (key, version):
            continue
        if len(fields) == MAX_FIELDS:
            notes.append(f"left out {name!r} and the fields after it: a shape has at most {MAX_FIELDS} fields")
            break
        type_, note = stats.type()
        if note:
            notes.append(f"{name!r} {note}")
        field = {"name": name, "type": type_, "required": stats.required(type_, objects)}
        if type_ == "string":
            field["max_length"] = _max_length(stats.longest)
        field["sortable"] = False
        if type_ == "string":
            field["searchable"] = False
        fields.append(field)
    shape = {"key": key, "version": version, "fields": fields}
    parse_shape(shape)  # what is proposed is always a valid shape
    return {"shape": shape, "records_read": read, "notes": notes}


def _why_not_key(stats: "_Seen", objects: int) -> str:
    if stats.count < objects or stats.null or stats.blank:
        return f"it is missing or empty in {objects - stats.count + stats.null + stats.blank:,} record(s)"
    if stats.present != stats.strings:
        return "not all its values are strings"
    if stats.bad_text:
        return "some values hold a NUL character or an unpaired surrogate"
    if stats.longest > KEY_MAX_LENGTH:
        return f"some values are longer than {KEY_MAX_LENGTH} characters"
    return "its values repeat (a key must be distinct in every record of the sample)"


def _choose_key(usable: dict[str, "_Seen"], objects: int, notes: list) -> str:
    candidates = [n for n, s in usable.items() if s.key_ok and s.keys is not None and len(s.keys) == objects]
    for name, stats in usable.items():
        if name not in candidates and _preference(name, KEY_NAMES) < len(KEY_NAMES):
            notes.append(f"{name!r} cannot be the key: {_why_not_key(stats, objects)}")
    # A timestamp makes a poor key and is wanted as the version: take it only when nothing else fits.
    plain = [n for n in candidates if usable[n].other_text]
    key = _pick(plain, KEY_NAMES) or _pick(candidates, KEY_NAMES)
    if key is not None:
        return key
    why = "a key field must hold a distinct, non-empty string of at most 256 characters in every record"
    integers = [n for n, s in usable.items() if s.int == objects]
    if integers:
        why += (f"; {integers[0]!r} holds integers, and a key is a string (write the keys as strings, "
                "e.g. \"17\")")
    raise ShapeError(f"no field can be the key: {why}")


def _choose_version(usable: dict[str, "_Seen"], objects: int, key: str) -> str:
    candidates = [n for n, s in usable.items() if n != key and s.timestamps == objects]
    version = _pick(candidates, VERSION_NAMES)
    if version is None:
        raise ShapeError("no field can be the version: a version field must hold a timestamp "
                         "(like 2025-01-15T12:30:00Z) in every record")
    return version
