"""The home page, uploads, CSRF refusal and the error pages, through the Flask test client."""
import io

from app.web.auth import public

from .conftest import SAMPLE_INPUT
from .test_pages_helpers import text, token, upload


def test_home_shows_headline_numbers_and_an_empty_state(client):
    response = client.get("/")
    assert response.status_code == 200
    body = text(response)
    assert "Target rows" in body and "Open dead letters" in body and "none yet" in body
    assert "No runs yet" in body
    assert 'for="files"' in body and 'for="max_reject_percent"' in body  # every control is labelled


def test_upload_queues_a_run_that_the_run_page_shows_finished(client, app):
    response = upload(client, SAMPLE_INPUT.read_bytes(), "sample.json")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/runs/1")
    assert "queued" in text(client.get("/runs/1"))
    assert app.extensions["sluice_runs"].drain() == [1]
    page = text(client.get("/runs/1"))
    assert "succeeded" in page and "sample.json" in page
    assert '<tr data-count="inserted"><th scope="row">Inserted</th><td class="n">5</td>' in page
    assert '<tr data-count="rejected"><th scope="row">Rejected</th><td class="n">2</td>' in page
    home = text(client.get("/"))
    assert '<span class="num">5</span>' in home and '<span class="num">2</span>' in home  # rows, open dead letters


def test_upload_options_reach_the_run(client, app):
    response = upload(client, SAMPLE_INPUT.read_bytes(), "sample.json", ignore_watermark="y", dry_run="y",
                      max_reject_percent="10")
    assert response.status_code == 303
    app.extensions["sluice_runs"].drain()
    page = text(client.get("/runs/1"))
    assert "backfill yes" in page and "reject threshold 10%" in page and "dry run yes" in page
    assert "failed" in page and "over the reject threshold" in page  # 2 of 7 rejected is over 10%


def test_xhr_upload_of_several_files_answers_json(client, app):
    data = {"csrf_token": token(client), "files": [(io.BytesIO(SAMPLE_INPUT.read_bytes()), "a.json"),
                                                   (io.BytesIO(b'{"key": "x", "name": "n", "value": 1, '
                                                               b'"ts": "2025-01-01T00:00:00Z"}'), "b.json")]}
    response = client.post("/upload", data=data, content_type="multipart/form-data",
                           headers={"Accept": "application/json"})
    assert response.status_code == 202
    assert response.json == {"runs": [1, 2], "errors": [], "location": "/runs"}
    assert app.extensions["sluice_runs"].drain() == [1, 2]


def test_a_file_that_is_not_json_is_refused_with_a_message(client):
    response = upload(client, b"hello, this is not json", "notes.txt")
    assert response.status_code == 400
    assert "notes.txt: not JSON, JSON Lines or gzip" in text(response)
    assert "No runs yet" in text(response)
    xhr = client.post("/upload", data={"csrf_token": token(client),
                                       "files": [(io.BytesIO(b"nope"), "n.txt")]},
                      content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert xhr.status_code == 400 and xhr.json["runs"] == [] and "not JSON" in xhr.json["errors"][0]


def test_upload_without_a_file_says_so(client):
    response = client.post("/upload", data={"csrf_token": token(client)}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Choose at least one file" in text(response)


def test_a_file_over_the_limit_gets_the_413_page_naming_the_limit(client, app):
    app.config["SLUICE_MAX_UPLOAD_BYTES"] = 10 * 1024
    response = upload(client, b"[" + b" " * 20_000 + b"]", "big.json")
    assert response.status_code == 413
    assert "larger than the limit of 10 KiB" in text(response)


def test_post_without_csrf_token_is_refused_and_does_nothing(client):
    response = client.post("/upload", data={"files": [(io.BytesIO(SAMPLE_INPUT.read_bytes()), "s.json")]},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert "security token" in text(response)
    assert "No runs yet" in text(client.get("/"))


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "There is no page at this address" in text(response) and "Jump to key" in text(response)
    assert client.get("/runs/999").status_code == 404
    assert client.get("/dead-letters/999").status_code == 404


def test_an_unexpected_error_gets_the_500_page(app, client):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def boom():
        raise RuntimeError("boom")

    app.add_url_rule("/__boom", "boom", public(boom))
    response = client.get("/__boom")
    assert response.status_code == 500
    assert "Something went wrong" in text(response) and "boom" not in text(response)


def test_bad_page_link_is_a_400_not_a_500(client):
    response = client.get("/target?cursor=not-a-cursor")
    assert response.status_code == 400
    assert "start from the first page" in text(response)
    assert client.get("/target?cursor=" + "WyJhIiwxXQ").status_code == 400  # ["a",1]: wrong size
