"""Helpers for the page tests (no tests here).

The test app keeps CSRF protection on, as in production: a test gets the token from the page the
form is on (`token`), and the CSRF tests post without one.
"""
import io
import json
import re

from app.pipeline import run_file

_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def token(client, url: str = "/") -> str:
    """The CSRF token of the form on the page at `url`."""
    response = client.get(url)
    match = _TOKEN.search(response.get_data(as_text=True))
    assert match, f"no form with a CSRF token on {url}"
    return match.group(1)


def records_file(write, name: str, records: list) -> str:
    """Write records as JSON Lines and return the path."""
    return str(write(name, "\n".join(json.dumps(r) for r in records) + "\n"))


def load(conn, write, records: list, name: str = "batch.jsonl", **kwargs) -> dict:
    """Run the pipeline on records (outside the web app); return the summary."""
    return run_file(conn, records_file(write, name, records), **kwargs)


def upload(client, content: bytes, name: str = "upload.json", **fields):
    """Post one file through the upload form, with a token from the home page."""
    data = {"csrf_token": token(client, "/"), "files": [(io.BytesIO(content), name)], **fields}
    return client.post("/upload", data=data, content_type="multipart/form-data")


def text(response) -> str:
    """A response's body as text."""
    return response.get_data(as_text=True)
