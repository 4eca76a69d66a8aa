"""Datasets over the JSON API (SPEC §10): propose, create, list, show, evolve, archive, the shape's schema,
and `?dataset=` on every operation of a dataset's data, through the test client."""
import gzip
import io
import json
import uuid

import pytest

from app.datasets.shape import SHAPE_JSON_SCHEMA

ORDERS = [
    {"order_id": f"o{i:03d}", "customer": ("acme " if i % 2 else "zenith ") + str(i), "total": i * 1.5,
     "items": i, "paid": i % 3 == 0, "meta": {"tags": ["a", i]}, "updated_at": f"2025-02-{1 + i % 27:02d}T10:00:00Z"}
    for i in range(1, 13)
]
BAD = [{"order_id": "o900", "customer": "x", "total": "lots", "items": 1, "paid": True, "meta": None,
        "updated_at": "2025-02-01T00:00:00Z"},
       {"customer": "nobody", "total": 1, "items": 1, "paid": False, "meta": 1, "updated_at": "2025-02-01T00:00:00Z"}]


def jsonl(records) -> bytes:
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


@pytest.fixture
def name():
    """A dataset name of this test's own (PostgreSQL keeps the catalogue between tests)."""
    return f"orders_{uuid.uuid4().hex[:8]}"


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code, error
    return error["message"]


def proposed(client, records=ORDERS) -> dict:
    response = client.post("/api/datasets/propose", data=jsonl(records), content_type="application/x-ndjson")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def make(client, name, **extra) -> dict:
    shape = proposed(client)["shape"]
    for field in shape["fields"]:
        if field["name"] == "customer":
            field.update(sortable=True, searchable=True, max_length=200)
        if field["name"] == "total":
            field["sortable"] = True
    response = client.post("/api/datasets", json={"name": name, "title": "Orders", "shape": shape, **extra})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response


def load(client, app, name, records, query="") -> dict:
    response = client.post(f"/api/runs?dataset={name}{query}", data=jsonl(records),
                           content_type="application/x-ndjson")
    assert response.status_code == 202, response.get_data(as_text=True)
    app.extensions["sluice_runs"].drain()
    return client.get(response.headers["Location"]).get_json()


def test_a_round_trip_from_a_sample_to_its_own_target_dead_letters_lineage_and_watermark(client, app, name):
    proposal = proposed(client)
    assert proposal["records_read"] == 12 and proposal["notes"]
    assert proposal["shape"]["key"] == "order_id" and proposal["shape"]["version"] == "updated_at"

    created = make(client, name)
    assert created.headers["Location"].endswith(f"/api/datasets/{name}")
    body = created.get_json()
    assert body["name"] == name and body["title"] == "Orders" and body["version"] == 1
    assert body["table"] == f"ds_{name}" and body["watermark"] == f"{name}_updated_at"
    assert body["rows"] == 0 and body["open_dead_letters"] == 0 and body["watermark_value"] is None
    assert [v["changes"] for v in body["versions"]] == [["created"]]

    run = load(client, app, name, ORDERS + BAD)
    assert run["status"] == "succeeded" and run["dataset"] == name and run["shape_version"] == 1
    assert run["summary"]["dataset"] == name
    assert run["summary"]["inserted"] == 12 and run["summary"]["rejected"] == 2

    page = client.get(f"/api/target?dataset={name}&sort=total&order=desc&limit=3").get_json()
    assert [r["order_id"] for r in page["items"]] == ["o012", "o011", "o010"]
    row = page["items"][0]
    assert row["customer"] == "zenith 12" and row["total"] == 18.0 and row["items"] == 12 and row["paid"] is True
    assert row["updated_at"] == "2025-02-13T10:00:00" and row["sluice_run_id"] == run["id"]
    searched = client.get(f"/api/target?dataset={name}&search[customer]=acme").get_json()
    assert {r["order_id"] for r in searched["items"]} == {f"o{i:03d}" for i in range(1, 13, 2)}
    export = client.get(f"/api/target?dataset={name}&format=csv")
    assert export.status_code == 200 and export.get_data(as_text=True).splitlines()[0].startswith("order_id,customer")

    lineage = client.get(f"/api/lineage/o003?dataset={name}").get_json()
    assert lineage["dataset"] == name and lineage["target"]["order_id"] == "o003"
    assert [e["step"] for e in lineage["items"]] == ["inserted", "staged"]
    assert client.get("/api/lineage/o003").status_code == 404  # not a key of events

    letters = client.get(f"/api/dead-letters?dataset={name}").get_json()
    assert letters["counts"] == {"invalid_total": 1, "missing_key": 1}
    assert {d["dataset"] for d in letters["items"]} == {name}
    bad = next(d for d in letters["items"] if d["error"] == "invalid_total")
    assert_error(client.get(f"/api/dead-letters/{bad['id']}?dataset=events"), 404, "not_found")
    assert client.get(f"/api/dead-letters/{bad['id']}?dataset={name}").status_code == 200
    fixed = client.post(f"/api/dead-letters/{bad['id']}/reprocess?dataset={name}",
                        json={"raw": {**BAD[0], "total": 9, "meta": {}}})
    assert fixed.status_code == 200, fixed.get_data(as_text=True)
    assert fixed.get_json()["run"]["dataset"] == name and fixed.get_json()["dead_letter"]["status"] == "resolved"
    assert client.get(f"/api/lineage/o900?dataset={name}").get_json()["target"]["total"] == 9.0

    marks = client.get(f"/api/watermarks?dataset={name}").get_json()["items"]
    assert [(m["name"], m["dataset"], m["value"]) for m in marks] == [
        (f"{name}_updated_at", name, "2025-02-13T10:00:00")]
    preview = client.get(f"/api/watermarks/{name}_updated_at/preview?value=2025-02-12T00:00:00Z").get_json()
    assert preview["rows_at_or_after"] == 2
    changed = client.put(f"/api/watermarks/{name}_updated_at?dataset={name}", json={"value": "2025-02-01T00:00:00Z"})
    assert changed.status_code == 200 and changed.get_json()["value"] == "2025-02-01T00:00:00"
    assert_error(client.put(f"/api/watermarks/events_ts?dataset={name}", json={"value": "2025-02-01T00:00:00Z"}),
                 404, "not_found")

    listed = {d["name"]: d for d in client.get("/api/datasets").get_json()["items"]}
    assert next(iter(listed)) == "events"
    assert listed[name]["rows"] == 13 and listed[name]["open_dead_letters"] == 1
    assert listed[name]["watermark_value"] == "2025-02-01T00:00:00"

    # events is untouched by all of it
    assert client.get("/api/target").get_json()["items"] == []
    assert client.get("/api/runs").get_json()["items"] == []
    assert client.get("/api/dead-letters").get_json() == {"items": [], "next": None, "counts": {}}
    assert client.get("/api/watermarks").get_json()["items"][0]["value"] is None
    assert listed["events"]["rows"] == 0
    runs = client.get(f"/api/runs?dataset={name}").get_json()["items"]
    assert [r["kind"] for r in runs] == ["reprocess", "api"] and {r["dataset"] for r in runs} == {name}


def test_bulk_actions_act_on_one_dataset(client, app, name):
    make(client, name)
    load(client, app, name, BAD)
    assert_error(client.post("/api/dead-letters/discard", json={"confirm": 2}), 409, "count_mismatch")  # events: 0
    assert client.post("/api/dead-letters/discard", json={"confirm": 0}).get_json() == {"count": 0, "run": None}
    message = assert_error(client.post(f"/api/dead-letters/discard?dataset={name}",
                                       json={"confirm": 2, "filter": {"error": "invalid_value"}}), 400, "bad_request")
    assert "not an error code" in message
    done = client.post(f"/api/dead-letters/discard?dataset={name}",
                       json={"confirm": 1, "filter": {"error": "invalid_total"}, "reason": "test"})
    assert done.get_json() == {"count": 1, "run": None}
    again = client.post(f"/api/dead-letters/reprocess?dataset={name}", json={"confirm": 1})
    assert again.status_code == 200 and again.get_json()["run"]["dataset"] == name


def test_the_shape_schema_and_every_dataset_operation_are_documented(client):
    assert client.get("/api/datasets/shape-schema").get_json() == SHAPE_JSON_SCHEMA
    doc = client.get("/api/openapi.json").get_json()
    for path, method in [("/api/datasets", "get"), ("/api/datasets", "post"), ("/api/datasets/{name}", "get"),
                         ("/api/datasets/{name}", "patch"), ("/api/datasets/{name}/archive", "post"),
                         ("/api/datasets/propose", "post"), ("/api/datasets/shape-schema", "get")]:
        assert method in doc["paths"][path], (method, path)
    assert doc["components"]["schemas"]["Shape"]["properties"]["fields"]["items"] == {
        "$ref": "#/components/schemas/ShapeField"}
    for path, method in [("/api/runs", "post"), ("/api/runs", "get"), ("/api/target", "get"),
                         ("/api/lineage/{key}", "get"), ("/api/dead-letters", "get"),
                         ("/api/dead-letters/reprocess", "post"), ("/api/dead-letters/discard", "post"),
                         ("/api/dead-letters/{dl_id}", "get"), ("/api/watermarks", "get"),
                         ("/api/watermarks/{name}", "put")]:
        names = [p["name"] for p in doc["paths"][path][method]["parameters"]]
        assert "dataset" in names, (method, path)


UNKNOWN = [("post", "/api/runs?dataset=nope"), ("get", "/api/runs?dataset=nope"), ("get", "/api/target?dataset=nope"),
           ("get", "/api/target?dataset=nope&format=json"), ("get", "/api/lineage/k?dataset=nope"),
           ("get", "/api/dead-letters?dataset=nope"), ("post", "/api/dead-letters/discard?dataset=nope"),
           ("post", "/api/dead-letters/reprocess?dataset=nope"), ("get", "/api/dead-letters/1?dataset=nope"),
           ("post", "/api/dead-letters/1/discard?dataset=nope"), ("post", "/api/dead-letters/1/reopen?dataset=nope"),
           ("post", "/api/dead-letters/1/reprocess?dataset=nope"), ("get", "/api/watermarks?dataset=nope"),
           ("get", "/api/watermarks/events_ts?dataset=nope"), ("put", "/api/watermarks/events_ts?dataset=nope"),
           ("delete", "/api/watermarks/events_ts?dataset=nope"),
           ("get", "/api/watermarks/events_ts/preview?dataset=nope"), ("get", "/api/datasets/nope"),
           ("patch", "/api/datasets/nope"), ("post", "/api/datasets/nope/archive"),
           ("get", "/api/runs?dataset=Not%20A%20Name")]


def test_an_empty_dataset_parameter_is_refused(client):
    assert_error(client.get("/api/target?dataset="), 400, "bad_parameter")
    assert_error(client.post("/api/runs?dataset=", data=b"[]", content_type="application/json"), 400, "bad_parameter")


@pytest.mark.parametrize("method, url", UNKNOWN)
def test_an_unknown_dataset_is_404_everywhere(loaded, client, method, url):
    body = {"confirm": 0} if "dead-letters/" in url and url.split("?")[0].endswith(("discard", "reprocess")) \
        and "/1/" not in url else {"value": "2025-01-01T00:00:00Z"} if method == "put" else {}
    kwargs = {"data": b"[]", "content_type": "application/json"} if url.startswith("/api/runs") and method == "post" \
        else {"json": body} if method in ("put", "patch") or body else {}
    message = assert_error(getattr(client, method)(url, **kwargs), 404, "unknown_dataset")
    assert "no dataset" in message


def test_create_refuses_a_bad_name_a_bad_shape_and_a_taken_name(client, name):
    shape = proposed(client)["shape"]
    message = assert_error(client.post("/api/datasets", json={"name": "Orders!", "shape": shape}), 422, "invalid")
    assert "not a valid dataset name" in message
    broken = {**shape, "fields": [*shape["fields"], {"name": "customer", "type": "string"}]}
    message = assert_error(client.post("/api/datasets", json={"name": name, "shape": broken}), 422, "invalid")
    assert "customer" in message
    typo = {**shape, "fields": [{**shape["fields"][0], "type": "text"}]}
    assert "fields[0].type" in assert_error(client.post("/api/datasets", json={"name": name, "shape": typo}),
                                            422, "invalid")
    assert_error(client.post("/api/datasets", json={"name": name, "shape": []}), 400, "bad_request")
    assert_error(client.post("/api/datasets", json={"name": name}), 400, "bad_request")
    assert client.get(f"/api/datasets/{name}").status_code == 404  # nothing half made
    assert client.post("/api/datasets", json={"name": name, "shape": shape}).status_code == 201
    assert "exists already" in assert_error(client.post("/api/datasets", json={"name": name, "shape": shape}),
                                            409, "conflict")
    assert_error(client.post("/api/datasets", json={"name": "events", "shape": shape}), 409, "conflict")
    assert_error(client.post("/api/datasets", data="{}", content_type="text/plain"), 415, "unsupported_media_type")


def test_evolve_allows_what_the_rules_allow_and_says_what_to_do_instead(client, name):
    shape = make(client, name).get_json()["shape"]
    grown = {**shape, "fields": [*shape["fields"], {"name": "note", "type": "string", "max_length": 50}]}
    response = client.patch(f"/api/datasets/{name}", json={"shape": grown, "description": "with notes"})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["version"] == 2 and body["description"] == "with notes"
    assert any("note" in change for change in body["versions"][0]["changes"])
    assert client.patch(f"/api/datasets/{name}", json={}).get_json()["version"] == 2  # nothing changed
    assert client.patch(f"/api/datasets/{name}", json={"title": "Sales"}).get_json()["title"] == "Sales"

    retyped = {**grown, "fields": [{**f, "type": "integer"} if f["name"] == "total" else f for f in grown["fields"]]}
    message = assert_error(client.patch(f"/api/datasets/{name}", json={"shape": retyped}), 409, "conflict")
    assert "total" in message and "new dataset" in message
    removed = {**grown, "fields": grown["fields"][1:]}
    assert "new dataset" in assert_error(client.patch(f"/api/datasets/{name}", json={"shape": removed}),
                                         409, "conflict")
    assert_error(client.patch(f"/api/datasets/{name}", json={"shape": {"key": 1}}), 422, "invalid")
    assert_error(client.patch("/api/datasets/events", json={"shape": shape}), 409, "conflict")
    assert client.get(f"/api/datasets/{name}").get_json()["version"] == 3


def test_an_archived_dataset_is_readable_and_refuses_writes(client, app, name):
    make(client, name)
    run = load(client, app, name, ORDERS[:2] + BAD[:1])
    archived = client.post(f"/api/datasets/{name}/archive")
    assert archived.status_code == 200 and archived.get_json()["archived_at"]
    assert "archived" in assert_error(client.post(f"/api/runs?dataset={name}", data=jsonl(ORDERS),
                                                  content_type="application/x-ndjson"), 409, "archived")
    assert_error(client.post(f"/api/runs/{run['id']}/retry"), 409, "archived")
    letter = client.get(f"/api/dead-letters?dataset={name}").get_json()["items"][0]
    assert_error(client.post(f"/api/dead-letters/{letter['id']}/discard"), 409, "archived")
    assert_error(client.post(f"/api/dead-letters/{letter['id']}/reprocess"), 409, "archived")
    assert_error(client.post(f"/api/dead-letters/reprocess?dataset={name}", json={"confirm": 1}), 409, "archived")
    assert_error(client.put(f"/api/watermarks/{name}_updated_at", json={"value": "2025-01-01T00:00:00Z"}),
                 409, "archived")
    assert_error(client.delete(f"/api/watermarks/{name}_updated_at"), 409, "archived")
    assert_error(client.patch(f"/api/datasets/{name}", json={"title": "x"}), 409, "archived")
    assert_error(client.post(f"/api/datasets/{name}/archive"), 409, "archived")
    assert len(client.get(f"/api/target?dataset={name}").get_json()["items"]) == 2  # still readable
    assert client.get(f"/api/dead-letters/{letter['id']}").status_code == 200
    assert_error(client.post("/api/datasets/events/archive"), 409, "conflict")


def test_propose_takes_multipart_and_gzip_and_refuses_what_it_cannot_read(client):
    multipart = client.post("/api/datasets/propose", data={"file": (io.BytesIO(jsonl(ORDERS)), "orders.jsonl")},
                            content_type="multipart/form-data")
    assert multipart.status_code == 200 and multipart.get_json()["shape"]["key"] == "order_id"
    gz = client.post("/api/datasets/propose", data=gzip.compress(json.dumps(ORDERS).encode()),
                     content_type="application/gzip")
    assert gz.status_code == 200 and gz.get_json()["records_read"] == 12
    many = [{**ORDERS[0], "order_id": f"k{i}"} for i in range(10_050)]
    assert proposed(client, many)["records_read"] == 10_000
    assert_error(client.post("/api/datasets/propose", data=b"hello", content_type="application/json"), 415, "not_json")
    assert_error(client.post("/api/datasets/propose", data=b"[1, 2]", content_type="application/json"), 422, "no_shape")
    assert_error(client.post("/api/datasets/propose", data=b'[{"a": ', content_type="application/json"),
                 422, "unreadable")
    assert_error(client.post("/api/datasets/propose", data=b"x", content_type="text/plain"), 415,
                 "unsupported_media_type")
    assert_error(client.post("/api/datasets/propose", data={}, content_type="multipart/form-data"), 400, "bad_request")


def test_bodies_are_bounded_by_the_request_limit_and_a_sample_by_the_upload_limit(app, client, name):
    app.config["MAX_CONTENT_LENGTH"] = 1500
    shape = proposed(client)["shape"]
    assert_error(client.post("/api/datasets", json={"name": name, "shape": shape, "description": "x" * 2000}),
                 413, "too_large")
    assert_error(client.patch("/api/datasets/events", json={"description": "x" * 2000}), 413, "too_large")
    assert len(jsonl(ORDERS)) > 1500
    assert proposed(client)["records_read"] == 12  # a sample may be as large as an upload
    app.config["SLUICE_MAX_UPLOAD_BYTES"] = 1000
    assert_error(client.post("/api/datasets/propose", data=jsonl(ORDERS), content_type="application/x-ndjson"),
                 413, "too_large")


@pytest.mark.parametrize("query", ["search[name][x]=sig", "x[y]=1", "search[Bad Name]=1"])
def test_a_malformed_search_is_refused_by_the_api_and_ignored_by_the_page(loaded, client, query):
    answer = client.get(f"/api/target?{query}")
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "bad_parameter"
    page = client.get(f"/target?{query}")
    assert page.status_code == 200 and b"evt-001" in page.data
