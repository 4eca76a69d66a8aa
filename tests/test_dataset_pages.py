"""The dashboard per dataset: creating one (by fields, by a proposed sample, as JSON), uploading to it,
its own target columns, sorts and searches, its runs, dead letters, lineage and watermark, the switcher,
the home listing, evolving and archiving it."""
import html
import io
import json
import re
import uuid

import pytest

from .test_pages_helpers import text, token

ORDERS = [
    {"order_id": f"o{i:03d}", "customer": ("acme " if i % 2 else "zenith ") + str(i), "total": i * 1.5,
     "items": i, "paid": i % 3 == 0, "meta": {"tags": ["a", i]}, "updated_at": f"2025-02-{1 + i % 27:02d}T10:00:00Z"}
    for i in range(1, 13)
]


@pytest.fixture
def name():
    """A dataset name of this test's own (PostgreSQL keeps the catalogue between tests)."""
    return f"orders_{uuid.uuid4().hex[:8]}"


def _jsonl(records) -> bytes:
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


def _form_fields(rows) -> dict:
    data = {}
    for i, row in enumerate(rows):
        for k, v in row.items():
            if v is True:
                data[f"fields-{i}-{k}"] = "y"
            elif v not in (False, None):
                data[f"fields-{i}-{k}"] = str(v)
    return data


FIELDS = [
    {"name": "customer", "type": "string", "required": True, "max_length": 200, "sortable": True, "searchable": True},
    {"name": "total", "type": "number", "required": True, "sortable": True},
    {"name": "items", "type": "integer"},
    {"name": "paid", "type": "boolean"},
    {"name": "meta", "type": "json"},
]


def create(client, name, fields=FIELDS, **extra):
    data = {"csrf_token": token(client, "/datasets/new"), "name": name, "title": "Orders", "key": "order_id",
            "version": "updated_at", "create": "Create dataset", **_form_fields(fields), **extra}
    return client.post("/datasets/new", data=data)


def upload(client, app, name, records, filename="orders.jsonl"):
    data = {"csrf_token": token(client, "/"), "dataset": name, "files": [(io.BytesIO(_jsonl(records)), filename)]}
    response = client.post("/upload", data=data, content_type="multipart/form-data")
    app.extensions["sluice_runs"].drain()
    return response


def _value(body: str, element_id: str) -> str | None:
    match = re.search(rf'<input [^>]*id="{element_id}"[^>]*value="([^"]*)"', body)
    return html.unescape(match.group(1)) if match else None


def _column_keys(body: str) -> list[str]:
    return re.findall(r'<a class="key" href="/lineage/[^"?]*\?dataset=[a-z0-9_]+">([^<]*)</a>', body)


def test_a_dataset_made_from_the_form_has_its_shape_page_and_is_listed(client, name):
    response = create(client, name)
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/datasets/{name}")
    page = text(client.get(f"/datasets/{name}"))
    assert f"Dataset {name} created" in page and f"ds_{name}" in page
    shape = re.search(r'<table id="shape">(.*?)</table>', page, re.DOTALL).group(1)
    assert re.findall(r"<tr><td><code>([a-z_]+)</code>", shape) == ["order_id", "customer", "total", "items", "paid",
                                                                     "meta", "updated_at"]
    assert "created" in re.search(r'<table id="versions">(.*?)</table>', page, re.DOTALL).group(1)
    assert f'href="/datasets/{name}"' in text(client.get("/datasets"))
    home = text(client.get("/"))
    assert f'<tr data-dataset="{name}">' in home and '<tr data-dataset="events">' in home
    # The switcher on every page offers it, and goes to the same area of the chosen dataset.
    target = text(client.get("/target"))
    assert f'href="/target?dataset={name}"' in target and 'href="/target"' in target


def test_a_refused_shape_shows_why_and_keeps_every_input(client, name):
    fields = [{"name": "customer", "type": "string", "max_length": 200, "searchable": True},
              {"name": "total", "type": "number", "searchable": True}]
    response = create(client, name, fields, description="what we sold")
    body = text(response)
    assert response.status_code == 400 and "The dataset was not created" in body
    assert "fields[1] (&#39;total&#39;)" in body and "searchable" in body
    assert f'value="{name}"' in body and "what we sold" in body and 'value="order_id"' in body
    assert 'value="customer"' in body and 'value="total"' in body and 'value="200"' in body
    # Nothing was made.
    assert client.get(f"/datasets/{name}").status_code == 404
    bad_name = text(create(client, "Orders!", FIELDS))
    assert "not a valid dataset name" in bad_name and 'value="Orders!"' in bad_name
    assert create(client, name).status_code == 303
    again = create(client, name)
    assert again.status_code == 409 and "exists already" in text(again)


def test_more_rows_adds_empty_field_rows_and_keeps_the_filled_ones(client):
    data = {"csrf_token": token(client, "/datasets/new"), "name": "x", "more": "More field rows",
            **_form_fields([{"name": "kept", "type": "integer"}])}
    body = text(client.post("/datasets/new", data=data))
    assert 'value="kept"' in body and 'name="fields-10-name"' in body
    assert len(re.findall(r'name="fields-\d+-name"', text(client.get("/datasets/new")))) >= 6


def _propose(client, content: bytes, filename="orders.jsonl"):
    data = {"csrf_token": token(client, "/datasets/new"), "sample": (io.BytesIO(content), filename)}
    return client.post("/datasets/new/propose", data=data, content_type="multipart/form-data")


def test_a_proposed_shape_is_shown_for_editing_then_created_as_edited(client, name):
    body = text(_propose(client, _jsonl(ORDERS)))
    assert "The proposed shape" in body and "12 records read" in body
    assert _value(body, "ds-key") == "order_id" and _value(body, "ds-version") == "updated_at"
    rows = dict(re.findall(r'id="fields-(\d+)-name"[^>]*value="([a-z_]+)"', body))
    assert list(rows.values()) == ["customer", "total", "items", "paid", "meta"]
    types = dict(re.findall(r'id="fields-(\d+)-type"[^>]*>.*?<option selected value="([a-z]+)"', body))
    assert [types[i] for i in rows] == ["string", "number", "integer", "boolean", "json"]
    assert 'id="fields-0-required"' in body and _value(body, "ds-name") == "orders"  # named after the file
    # The administrator edits the proposal: customer searchable and sortable, total sortable.
    fields = json.loads(html.unescape(re.search(r'<textarea[^>]*id="ds-json"[^>]*>(.*?)</textarea>', body,
                                                re.DOTALL).group(1)))["fields"]
    fields[0].update(sortable=True, searchable=True, max_length=300)  # an indexed string: at most 400
    fields[1].update(sortable=True)
    assert create(client, name, fields).status_code == 303
    shape = text(client.get(f"/datasets/{name}"))
    assert re.search(r"<code>customer</code></td><td>payload</td><td>string</td><td>yes</td><td class=\"n\">[\d,]+"
                     r"</td><td>yes</td><td>yes</td>", shape)


def test_the_json_box_creates_too_and_a_bad_sample_is_explained(client, name):
    shape = {"key": "sku", "version": "at", "fields": [{"name": "label", "type": "string", "searchable": True,
                                                                   "max_length": 100}]}
    data = {"csrf_token": token(client, "/datasets/new"), "name": name, "shape_json": json.dumps(shape),
            "create_from_json": "Create from this JSON"}
    assert client.post("/datasets/new", data=data).status_code == 303
    assert "<code>sku</code>" in text(client.get(f"/datasets/{name}"))
    broken = text(client.post("/datasets/new", data={**data, "shape_json": '{"key": '}))
    assert "not JSON" in broken and "{&#34;key&#34;: " in broken
    no_time = text(_propose(client, _jsonl([{"id": "a", "n": 1}, {"id": "b", "n": 2}])))
    assert "timestamp" in no_time and "orders.jsonl" in no_time
    assert "not JSON" in text(_propose(client, b"hello"))


def test_uploading_to_a_dataset_shows_its_own_columns_sorts_and_searches(client, app, name):
    create(client, name)
    home = text(client.get("/"))
    assert f'<option value="{name}">' in home
    assert upload(client, app, name, ORDERS + [{"order_id": "bad", "customer": "x", "updated_at": "2025-02-01"}]
                  ).status_code == 303
    run = text(client.get("/runs/1"))
    assert f"<code>{name}</code></a>, shape version 1" in run
    page = text(client.get(f"/target?dataset={name}"))
    heads = re.findall(r'<th scope="col" data-column="([a-z_]+)" data-type="([a-z]+)"', page)
    assert heads == [("order_id", "string"), ("customer", "string"), ("total", "number"), ("items", "integer"),
                     ("paid", "boolean"), ("meta", "json"), ("updated_at", "timestamp"),
                     ("sluice_updated_at", "timestamp"), ("sluice_run_id", "integer")]
    assert _column_keys(page) == [f"o{i:03d}" for i in range(1, 13)]
    assert '<td class="n">4.5</td><td class="n">3</td><td class="bool"><span class="bool yes">true</span>' in page
    assert '<td class="json"><code title="{&#34;tags&#34;:[&#34;a&#34;,3]}">' in page
    by_total = text(client.get(f"/target?dataset={name}&sort=total&desc=1"))
    assert _column_keys(by_total) == [f"o{i:03d}" for i in range(12, 0, -1)]
    assert 'aria-sort="descending"' in by_total
    searched = text(client.get(f"/target?dataset={name}&search%5Bcustomer%5D=acme+1"))
    assert _column_keys(searched) == ["o001", "o011"]
    assert _column_keys(text(client.get(f"/target?dataset={name}&key=o00"))) == [f"o00{i}" for i in range(1, 10)]
    # A search box per searchable field, and the key's; sortable headers are links that stay in the dataset.
    assert 'name="search[customer]"' in page and 'name="key"' in page
    sort_link = re.search(r'data-column="total"[^>]*>\s*<a href="([^"]+)"', page).group(1)
    assert "sort=total" in sort_link and f"dataset={name}" in sort_link
    assert f'<input type="hidden" name="dataset" value="{name}">' in page
    exported = json.loads(text(client.get(f"/target/export.json?dataset={name}&sort=total")))
    assert exported[0]["order_id"] == "o001" and exported[0]["meta"] == '{"tags":["a",1]}'
    # The events table knows nothing of it.
    assert _column_keys(text(client.get("/target"))) == [] and "o001" not in text(client.get("/target"))


def test_its_dead_letters_lineage_watermark_and_runs_pages_show_only_its_data(client, app, name):
    create(client, name)
    upload(client, app, name, ORDERS[:3] + [{"order_id": "bad", "customer": "x", "total": "lots",
                                             "updated_at": "2025-02-01T00:00:00Z"}])
    events = [{"key": "e1", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}, {"key": "e2", "name": "n"}]
    upload(client, app, "events", events, "events.jsonl")
    letters = text(client.get(f"/dead-letters?dataset={name}"))
    assert "invalid_total" in letters and "missing_value" not in letters
    assert '<option value="invalid_customer"' in letters and '<option value="missing_name"' not in letters
    assert "missing_value" in text(client.get("/dead-letters")) and "invalid_total" not in text(client.get("/dead-letters"))
    lineage = client.get(f"/lineage/o001?dataset={name}")
    assert lineage.status_code == 200 and "inserted" in text(lineage) and "acme 1" in text(lineage)
    assert client.get("/lineage/o001").status_code == 404
    assert client.get(f"/lineage/e1?dataset={name}").status_code == 404
    mark = text(client.get(f"/watermarks?dataset={name}"))
    assert f"{name}_updated_at" in mark and 'datetime="2025-02-04T10:00:00Z">2025-02-04 10:00:00</time>' in mark
    assert 'datetime="2025-01-01T00:00:00Z">2025-01-01 00:00:00</time>' in text(client.get("/watermarks"))
    runs = text(client.get(f"/runs?dataset={name}"))
    assert 'data-run="1"' in runs and 'data-run="2"' not in runs
    assert 'data-run="2"' in text(client.get("/runs")) and 'data-run="1"' not in text(client.get("/runs"))
    # A dead letter's page is in its dataset: its links stay there, and it lists the dataset's fields.
    dl_id = re.search(r'href="/dead-letters/(\d+)\?dataset=' + name, letters).group(1)
    letter = text(client.get(f"/dead-letters/{dl_id}"))
    assert f"<code>{name}</code>" in letter and "<code>total</code>: number, required" in letter
    # Edit and retry works with its shape.
    edited = json.dumps({"order_id": "bad", "customer": "x", "total": 9, "updated_at": "2025-02-01T00:00:00Z"})
    response = client.post(f"/dead-letters/{dl_id}/edit",
                           data={"csrf_token": token(client, f"/dead-letters/{dl_id}"), "raw": edited})
    assert response.status_code == 303
    assert "resolved" in text(client.get(response.headers["Location"]))
    assert "bad" in _column_keys(text(client.get(f"/target?dataset={name}&key=bad")))


def test_an_unknown_dataset_is_a_404_page_on_every_dataset_page(client):
    for path in ("/", "/target", "/runs", "/dead-letters", "/watermarks", "/lineage/x", "/target/export.csv",
                 "/datasets/nope", "/datasets/nope/archive"):
        url = path if path.startswith("/datasets") else path + "?dataset=nope"
        response = client.get(url)
        assert response.status_code == 404, url
        assert "nope" in text(response) and "Traceback" not in text(response)
    assert client.get("/target?dataset=%00%F0%9F%98%80").status_code == 404
    assert client.get("/target?dataset=").status_code == 200  # empty means events


def test_links_and_forms_stay_in_the_dataset(client, app, name):
    create(client, name)
    upload(client, app, name, ORDERS)
    page = text(client.get(f"/target?dataset={name}&limit=5"))
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', page, re.DOTALL).group(1)
    assert f'href="/runs?dataset={name}"' in nav and f'href="/dead-letters?dataset={name}"' in nav
    hidden = f'<input type="hidden" name="dataset" value="{name}">'
    chosen = re.compile(rf'<select id="f-dataset" name="dataset">.*<option value="{name}" selected>', re.DOTALL)
    for url in (f"/watermarks?dataset={name}", f"/target?dataset={name}", f"/runs?dataset={name}",
                f"/dead-letters?dataset={name}"):
        forms = re.findall(r'<form[^>]*method="get"[^>]*>(.*?)</form>', text(client.get(url)), re.DOTALL)
        # A GET form replaces its action's query string: it carries the dataset (the runs filter as a select).
        assert forms and all(hidden in f or chosen.search(f) for f in forms), url
    events = text(client.get("/target"))
    assert "dataset=" not in re.search(r'<nav aria-label="Main">(.*?)</nav>', events, re.DOTALL).group(1)


def test_evolving_adds_fields_and_indexes_and_lists_the_versions(client, app, name):
    create(client, name)
    page = text(client.get(f"/datasets/{name}"))
    data = {"csrf_token": token(client, f"/datasets/{name}"), "title": "Orders, all of them", "description": "",
            "save": "Save"}
    for i, field in enumerate(FIELDS):
        data[f"existing-{i}-name"] = field["name"]
        if field["type"] == "string":
            data[f"existing-{i}-max_length"] = "300"
    data["existing-2-sortable"] = "y"  # items
    data["added-0-name"], data["added-0-type"], data["added-0-searchable"] = "note", "string", "y"
    data["added-0-max_length"] = "200"
    response = client.post(f"/datasets/{name}", data=data)
    assert response.status_code == 303, text(response)
    after = text(client.get(f"/datasets/{name}"))
    assert "version 2" in after and "note" in after and "Orders, all of them" in after
    versions = re.search(r'<table id="versions">(.*?)</table>', after, re.DOTALL).group(1)
    assert "note" in versions and "300" in versions and "created" in versions
    target = text(client.get(f"/target?dataset={name}"))
    assert 'name="search[note]"' in target and '<option value="items"' in target
    # A refused change (a shorter string) says why and changes nothing.
    data = {**data, "csrf_token": token(client, f"/datasets/{name}"), "existing-0-max_length": "10"}
    data.pop("added-0-name")
    refused = client.post(f"/datasets/{name}", data=data)
    assert refused.status_code in (400, 409) and "Nothing was changed" in text(refused)
    assert 'value="10"' in text(refused)
    assert "version 2" in text(client.get(f"/datasets/{name}"))
    assert page  # the page before the change rendered


def test_an_archived_dataset_is_not_offered_for_upload_and_stays_readable(client, app, name):
    create(client, name)
    upload(client, app, name, ORDERS[:2])
    confirm = text(client.get(f"/datasets/{name}/archive"))
    assert "Yes, archive" in confirm
    response = client.post(f"/datasets/{name}/archive", data={"csrf_token": token(client, f"/datasets/{name}/archive")})
    assert response.status_code == 303
    assert "archived" in text(client.get(f"/datasets/{name}"))
    assert f'<option value="{name}"' not in text(client.get("/"))
    refused = upload(client, app, name, ORDERS[2:4])
    assert refused.status_code == 400 and "archived" in text(refused)
    assert _column_keys(text(client.get(f"/target?dataset={name}"))) == ["o001", "o002"]
    assert client.post(f"/datasets/{name}/archive", data={}).status_code == 400  # no CSRF token
    assert "archived" in text(client.get("/datasets"))


def test_the_home_page_names_its_dataset_by_name_and_title(client, name):
    assert create(client, name).status_code == 303
    body = text(client.get(f"/?dataset={name}"))
    assert f'Dataset <code class="dataset-name">{name}</code>: Orders' in body
    events = text(client.get("/"))
    assert 'class="dataset-name"' not in events and "built-in method" not in events
