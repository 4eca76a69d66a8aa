"""The lineage of one key across a dataset's runs, grouped by run, and keys like one that was never seen."""
import re
import string

from sqlalchemy import false, func, select
from sqlalchemy.engine import Connection

from ..datasets.registry import resolve
from ..models import Lineage
from .paging import newest_first, prefix_range, storable
from .target import target_row

VERSION_STEPS = ("inserted", "updated")  # the steps that wrote a version of the row
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# One value of an `updated` detail, by field type (see datasets/validator.describe_update): a string
# is its repr, possibly cut short with "…"; numbers, integers, booleans, timestamps and null have no
# space or semicolon. A json value can hold anything, so a shape with json fields is not split.
_STRING = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|['"][\s\S]*?…)"""
_PLAIN = r"[^\s;]+"


def lineage_of_key(conn: Connection, key: str, dataset=None, *, cursor: str | None = None,
                   limit: int | None = None) -> dict:
    """A key's current target row and its timeline, a keyset page of entries (newest first) grouped by run.

    `rows` is the page in id order, newest first; `groups` the same entries as runs, newest run
    first, each run's steps in position order; an entry without a run (discarded, reopened) is a
    group of its own. A run cut by a page boundary is marked `continued` (it began on the page
    before) or `continues` (it goes on over the page). Each `updated` entry carries its `changes`
    (field, old, new) when its detail can be split, and the entry that wrote the current row `current`.
    """
    ds = resolve(conn, dataset)
    by_key = (Lineage.dataset == ds.name, Lineage.key == key if storable(key) else false())
    page = newest_first(conn, select(Lineage).where(*by_key), Lineage.id, cursor, limit)
    target = target_row(conn, key, ds)
    current_run = target[ds.run_col.name] if target else None
    pattern = _update_pattern(ds.shape)
    for entry in page["rows"]:
        entry["current"] = entry["step"] in VERSION_STEPS and current_run is not None and entry["run_id"] == current_run
        entry["changes"] = changes(entry["detail"], pattern) if entry["step"] == "updated" else None
    groups = _groups(page["rows"])
    if groups:
        rows = page["rows"]
        newer = _neighbour_run(conn, by_key, Lineage.id > rows[0]["id"], Lineage.id.asc()) if not page["first_page"] else None
        older = _neighbour_run(conn, by_key, Lineage.id < rows[-1]["id"], Lineage.id.desc()) if page["next"] else None
        groups[0]["continued"] = newer is not None and newer == groups[0]["run_id"]
        groups[-1]["continues"] = older is not None and older == groups[-1]["run_id"]
    return {"key": key, "dataset": ds.name, "target": target, **page, "groups": groups}


def _groups(rows: list[dict]) -> list[dict]:
    """Consecutive entries of one run as a group (a run's entries for a key are written together), in position order."""
    groups: list[dict] = []
    for entry in rows:
        if groups and entry["run_id"] is not None and groups[-1]["run_id"] == entry["run_id"]:
            groups[-1]["entries"].append(entry)
        else:
            groups.append({"run_id": entry["run_id"], "at": entry["at"], "entries": [entry],
                           "continued": False, "continues": False})
    for group in groups:
        group["entries"].sort(key=lambda e: (e["pos"] if e["pos"] is not None else -1, e["id"]))
    return groups


def _neighbour_run(conn: Connection, by_key, beyond, order):
    """The run of the entry just beyond a page (one probe of the (dataset, key, id) index); None if none."""
    return conn.execute(select(Lineage.run_id).where(*by_key, beyond).order_by(order).limit(1)).scalar()


def _update_pattern(shape) -> tuple[re.Pattern, list[str]] | None:
    """A pattern that splits a shape's `updated` details, and its fields in order; None when a value may hold anything."""
    fields = [(f.name, f.type) for f in shape.fields] + [(shape.version, "timestamp")]
    if any(type_ == "json" for _, type_ in fields):
        return None
    parts = []
    for i, (name, type_) in enumerate(fields):
        value = f"(?:null|{_STRING if type_ == 'string' else _PLAIN})"
        parts.append(f"(?:(?:^|; ){re.escape(name)}: (?P<o{i}>{value}) → (?P<n{i}>{value}))?")
    return re.compile("".join(parts)), [name for name, _ in fields]


def changes(detail: str, pattern: tuple[re.Pattern, list[str]] | None) -> list[dict] | None:
    """An `updated` detail as a list of {field, old, new} (values as the detail writes them); None if it does not split."""
    match = pattern[0].fullmatch(detail) if pattern is not None and detail else None
    if match is None:
        return None
    found = [{"field": name, "old": match.group(f"o{i}"), "new": match.group(f"n{i}")}
             for i, name in enumerate(pattern[1]) if match.group(f"o{i}") is not None]
    return found or None


def similar_keys(conn: Connection, key: str, dataset=None, limit: int = 10) -> list[str]:
    """Target keys of a dataset that start like `key` (for a key that was never seen)."""
    ds = resolve(conn, dataset)
    stem = key[: max(1, len(key) - 2)]
    if not storable(stem):
        return []
    rows = conn.execute(select(ds.key_col).where(prefix_range(ds.key_col, stem)).order_by(ds.key_col).limit(limit))
    return [k for (k,) in rows]


def key_variants(conn: Connection, key: str, dataset=None, limit: int = 10) -> list[str]:
    """Keys with lineage in a dataset that differ from `key` only by ASCII case or surrounding white space.

    Both databases fold only ASCII letters in lower() on binary text, so the key is folded the same
    way here; each variant is one probe of the (dataset, lower(key), key) index.
    """
    ds = resolve(conn, dataset)
    if not storable(key):
        return []
    found: list[str] = []
    for folded in dict.fromkeys((key.strip().translate(_ASCII_LOWER), key.translate(_ASCII_LOWER))):
        after = None
        while len(found) < limit and folded:
            query = (select(Lineage.key).where(Lineage.dataset == ds.name, func.lower(Lineage.key) == folded)
                     .order_by(Lineage.key).limit(1))
            after = conn.execute(query.where(Lineage.key > after) if after is not None else query).scalar()
            if after is None:
                break
            if after != key and after not in found:
                found.append(after)
    return found
