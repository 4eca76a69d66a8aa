"""Every hostile input found so far, sent to every page and endpoint it applies to: never a 500, never a traceback.

The routes come from the app's URL map, so a new page or endpoint is covered without touching this file.
"""
import base64
import io
import json
import logging
import re
from urllib.parse import quote

import pytest

from .test_pages_helpers import token

BIG = str(2 ** 63)
# Every query parameter a page or an endpoint reads.
PARAMS = ("run", "ids", "status", "error", "key", "name", "sort", "desc", "order", "cursor", "before", "last",
          "lineage", "value", "reset", "limit", "format", "action", "filename", "ignore_watermark", "dry_run",
          "max_reject_rate", "dataset", "search[name]", "search[customer]", "search%5Bcustomer%5D", "search[]")
# Already percent-encoded where they must reach the server as such (NUL, the UTF-8 of a lone surrogate,
# a truncated UTF-8 sequence).
QUERY_VALUES = {
    "superscript-two": quote("²"), "arabic-three": quote("٣"), "fullwidth-one": quote("１"), "2**63": BIG,
    "negative": "-1", "zero": "0", "exponent": "1e999", "nan": "nan", "nul": "%00", "text-with-nul": "a%00b",
    "lone-surrogate": "%ED%A0%80", "truncated-utf8": "%F0%9F", "long": "9" * 5000,
}
ID_VALUES = ("٣", "²", "１", BIG, "99999999999999999999999", "0", "-1", "1e3", "9" * 5000)
TEXT_VALUES = ("a%00b", "%00", "%ED%A0%80", "%F0%9F")


def _cursor(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


CURSORS = {"huge-int": _cursor([2 ** 70]), "huge-pair": _cursor([2 ** 63, 2 ** 63]), "nul": _cursor(["a\x00"]),
           "lone-surrogate": _cursor(["\ud800"]), "null": _cursor([None]), "bool": _cursor([True]),
           "nested": _cursor([["x"], {}]), "float": _cursor([1e308]), "not-base64": "!!!%00",
           "not-json": base64.urlsafe_b64encode(b"\xff\xfe").decode(), "long": "A" * 5000,
           "null-pair": _cursor([None, "k"]), "bool-pair": _cursor([True, "k"]), "float-key": _cursor([1.5, 2.5])}
FORM_FIELDS = {"run": "²", "confirm": str(10 ** 30), "action": "discard", "error": "bogus", "reason": "a\x00b",
               "raw": '{"key": "a\\u0000", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}',
               "value": "²", "max_reject_percent": "1e999", "dataset": "a\x00b",
               # the dataset forms (new, evolve)
               "name": "a\x00b", "title": "t\x00", "description": "d\x00", "key": "k\x00", "version": "²",
               "shape_json": '{"key": "\\u0000", "version": [], "fields": {}}', "create_from_json": "y",
               "fields-0-name": "f\x00", "fields-0-type": "bogus", "fields-0-max_length": "1e999",
               "fields-99999-name": "x", "existing-0-name": "\x00", "existing-0-max_length": str(2 ** 64),
               "added-0-name": "sluice_x", "added-0-type": "json", "added-0-searchable": "y", "more": "y"}
JSON_BODIES = ({"reason": "a\x00b"}, {"raw": "\ud800"}, {"raw": {"key": "\ud800"}}, {"value": "²"},
               {"value": "2025-01-01T00:00:00\x00"}, {"filter": {"run": 2 ** 64}, "confirm": 2 ** 64},
               {"filter": {"run": "٣"}, "confirm": 1}, [], "²")
DATASET = "orders"  # a dataset of the `loaded` fixture's database besides events
ORDERS_SHAPE = {"key": "order_id", "version": "updated_at", "fields": [
    {"name": "customer", "type": "string", "required": True, "sortable": True, "searchable": True},
    {"name": "items", "type": "integer", "sortable": True}, {"name": "paid", "type": "boolean", "sortable": True},
    {"name": "meta", "type": "json"}]}
_ARG = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")


def routes(app):
    """(method, rule) of every route in the app's URL map."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, rule


def path(rule, *, id_value: str = "1", text_value: str | None = None) -> str:
    """A URL of `rule`: ids, names and keys filled in (with hostile values where given)."""
    def fill(match):
        converter, options, name = match.group(1), match.group(2), match.group(3)
        if converter == "int":
            return id_value
        if converter == "any":
            return options.split(",")[0].strip(" '\"")
        if text_value is not None:
            return text_value
        if name == "name" and rule.rule.startswith(("/datasets", "/api/datasets")):
            return DATASET
        return {"name": "events_ts", "filename": "sluice.css"}.get(name, "evt-001")
    return _ARG.sub(fill, rule.rule)


def send(client, method: str, url: str, **kwargs):
    """The response to one request, read to its end (a streamed export included) and closed."""
    with client.open(url, method=method, **kwargs) as response:
        response.get_data()
    return response


def check(responses: list, caplog) -> None:
    """No answer was a server error, and nothing logged a traceback."""
    errors = [(method, url, status) for method, url, status in responses if status >= 500]
    assert errors == []
    tracebacks = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert tracebacks == []


@pytest.fixture
def record(caplog):
    caplog.set_level(logging.ERROR)
    seen = []

    def _record(method, url, response):
        seen.append((method, url, response.status_code))
        return response

    yield _record
    check(seen, caplog)


@pytest.fixture
def loaded(loaded, engine):
    """The seed's sample in events, and a dataset `orders` (an optional sortable field among them) with rows."""
    from app.datasets.registry import DatasetError, create_dataset

    with engine.connect() as conn:
        try:
            create_dataset(conn, DATASET, ORDERS_SHAPE)
        except DatasetError:  # PostgreSQL keeps the catalogue between tests
            pass
    return loaded


def test_the_map_covers_pages_and_api(app):
    urls = {rule.rule for _, rule in routes(app)}
    assert {"/runs/<int:run_id>", "/dead-letters/<int:dl_id>", "/api/runs/<int:run_id>", "/healthz",
            "/api/dead-letters/<int:dl_id>/discard", "/lineage/<path:key>", "/datasets", "/datasets/new",
            "/datasets/new/propose", "/datasets/<name>", "/datasets/<name>/archive"} <= urls


def test_an_untrusted_host_is_refused_everywhere(loaded, client, record):
    for method, rule in routes(loaded):
        url = path(rule)
        response = record(method, url, send(client, method, url, headers={
            "Host": "evil.example:5000", "Origin": "http://evil.example:5000"}))
        assert response.status_code == (200 if rule.endpoint == "health.healthz" else 400), (method, url)


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "http://localhost:99999", "http://:0", "null",
                                    "http://local host", "\x7f"])
def test_a_malformed_origin(loaded, client, record, origin):
    for method, rule in routes(loaded):
        url = path(rule)
        record(method, url, send(client, method, url, headers={"Origin": origin, "Referer": origin}))


@pytest.mark.parametrize("referer", ["https://[", "https://[::1", "https://localhost:99999"])
def test_a_malformed_referer_on_a_form_post_over_https(loaded, client, record, referer):
    csrf = token(client, "/")
    for method, rule in routes(loaded):
        if method == "GET" or rule.rule.startswith("/api/"):
            continue
        url = path(rule)
        record(method, url, send(client, method, url, base_url="https://localhost", headers={"Referer": referer},
                                 data={"csrf_token": csrf, "action": "discard", "confirm": "0"}))


@pytest.mark.parametrize("id_value", ID_VALUES, ids=["arabic-three", "superscript-two", "fullwidth-one", "2**63",
                                                      "beyond-2**64", "zero", "negative", "exponent", "long"])
def test_ids_that_no_row_has(loaded, client, record, id_value):
    for method, rule in routes(loaded):
        if "<int:" not in rule.rule:
            continue
        url = path(rule, id_value=quote(id_value))
        response = record(method, url, send(client, method, url))
        assert response.status_code in (400, 404, 405), (method, url)  # never run 3, never a 500


def test_a_unicode_digit_never_means_an_ascii_one(loaded, client):
    assert client.get("/api/runs/%D9%A1").status_code == 404  # ١ is not run 1
    assert client.get("/runs/%D9%A1").status_code == 404
    assert client.get("/runs/status.json?ids=%D9%A1").json == {"runs": []}
    assert [r["id"] for r in client.get(f"/runs/status.json?ids=1,{BIG},%D9%A1,%C2%B2").json["runs"]] == [1]


@pytest.mark.parametrize("value", TEXT_VALUES, ids=["text-with-nul", "nul", "lone-surrogate", "truncated-utf8"])
def test_text_no_row_can_hold_in_a_path(loaded, client, record, value):
    for method, rule in routes(loaded):
        if not re.search(r"<(?!int:)", rule.rule):
            continue
        url = path(rule, text_value=value)
        record(method, url, send(client, method, url))


@pytest.mark.parametrize("value", QUERY_VALUES.values(), ids=QUERY_VALUES.keys())
def test_hostile_query_strings(loaded, client, record, value):
    for method, rule in routes(loaded):
        if method != "GET":
            continue
        for name in PARAMS:
            url = f"{path(rule)}?{name}={value}"
            record(method, url, send(client, method, url))
    for method, rule in routes(loaded):  # and each changing request with all of them at once
        if method != "GET":
            url = f"{path(rule)}?" + "&".join(f"{name}={value}" for name in PARAMS)
            record(method, url, send(client, method, url))


@pytest.mark.parametrize("value", [QUERY_VALUES[k] for k in ("nul", "lone-surrogate", "truncated-utf8", "long",
                                                             "2**63")], ids=["nul", "lone-surrogate", "truncated-utf8",
                                                                             "long", "2**63"])
def test_hostile_query_strings_in_another_dataset(loaded, client, record, value):
    for method, rule in routes(loaded):
        if method != "GET":
            continue
        for name in PARAMS:
            url = f"{path(rule)}?dataset={DATASET}&{name}={value}"
            record(method, url, send(client, method, url))
        for sort in ("items", "paid", "customer", "updated_at", "version", "updated"):
            for cursor in CURSORS.values():
                url = f"{path(rule)}?dataset={DATASET}&sort={sort}&cursor={cursor}&before={cursor}"
                record(method, url, send(client, method, url))


@pytest.mark.parametrize("content", [b"\x00\xff", b"[", b'{"id": "\\ud800"}', b"\x1f\x8b garbage", b"[1, 2]",
                                     b"[" * 100_000, b'{"id": "a", "t": "2025-01-01T00:00:00Z", "sluice_x": 1}'],
                         ids=["binary", "truncated", "surrogate", "bad-gzip", "no-objects", "deep", "reserved"])
def test_hostile_sample_files(loaded, client, record, content):
    csrf = token(client, "/datasets/new")
    for name in ("sample.json", "a\x00b.json", "x" * 5000):
        response = record("POST", "/datasets/new/propose", send(
            client, "POST", "/datasets/new/propose", content_type="multipart/form-data",
            data={"csrf_token": csrf, "sample": (io.BytesIO(content), name)}))
        assert response.status_code in (200, 400), name


@pytest.mark.parametrize("cursor", CURSORS.values(), ids=CURSORS.keys())
def test_forged_cursors(loaded, client, record, cursor):
    for method, rule in routes(loaded):
        if method != "GET":
            continue
        for name in ("cursor", "before", "lineage"):
            url = f"{path(rule)}?{name}={cursor}"
            response = record(method, url, send(client, method, url))
            assert response.status_code in (200, 302, 400, 404, 405), (method, url)


def test_hostile_form_fields(loaded, client, record):
    csrf = token(client, "/")
    for method, rule in routes(loaded):
        if method == "GET" or rule.rule.startswith("/api/"):
            continue
        for name, value in FORM_FIELDS.items():
            url = path(rule)
            record(method, url, send(client, method, url, data={"csrf_token": csrf, **FORM_FIELDS, name: value}))
            record(method, url, send(client, method, url, data={"csrf_token": csrf, name: value}))


@pytest.mark.parametrize("name", ["a\x00b.json", "\x00", "x" * 5000 + ".json", "../../etc/passwd", "a\nb"])
def test_hostile_upload_file_names(loaded, client, record, name):
    csrf = token(client, "/")
    content = b'{"key": "k", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}'
    for url, field, extra in (("/upload", "files", {"csrf_token": csrf}), ("/api/runs", "file", {})):
        response = record("POST", url, send(client, "POST", url, content_type="multipart/form-data",
                                            data={field: (io.BytesIO(content), name), **extra}))
        assert response.status_code in (202, 303, 400, 415), (url, name)


@pytest.mark.parametrize("body", JSON_BODIES, ids=["reason-nul", "raw-surrogate", "raw-key-surrogate",
                                                   "value-digit", "value-nul", "huge-ids", "run-digit",
                                                   "array", "string"])
def test_hostile_json_bodies(loaded, client, record, body):
    for method, rule in routes(loaded):
        if method == "GET":
            continue
        url = path(rule)
        record(method, url, send(client, method, url, data=json.dumps(body), content_type="application/json"))
