"""Uploads in an S3-compatible object store (`SLUICE_UPLOAD_URL=s3://…`), against a real S3-protocol server.

moto's server mode listens on a loopback port for the whole session; the app talks to it over HTTP
through obstore, as it would to MinIO or S3. Nothing in the client is patched.
"""
import gzip
import io
import json
import socket
import uuid
from datetime import timedelta

import boto3
import pytest

from app.pipeline.validate import utc_now

from .conftest import SAMPLE_INPUT, SAMPLE_SUMMARY
from .test_pages_helpers import text, upload

pytest.importorskip("obstore")
moto_server = pytest.importorskip("moto.server")

BUCKET = "sluice-test"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on a free loopback port, with one bucket."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, **_boto_keys()).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _boto_keys() -> dict:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3(s3_endpoint):
    """A boto3 client to look at the bucket from outside the app."""
    return boto3.client("s3", endpoint_url=s3_endpoint, **_boto_keys())


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """The standard AWS_* variables and SLUICE_S3_ENDPOINT pointing at the test server."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLUICE_S3_ENDPOINT", s3_endpoint)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def prefix():
    """A fresh key prefix for this test, so tests sharing the bucket never see each other's objects."""
    return f"t-{uuid.uuid4().hex[:10]}"


def _make_app(db_url, tmp_path, monkeypatch, upload_url: str, **config):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": "test",
                       "SLUICE_UPLOAD_URL": upload_url, "SLUICE_EMBEDDED_WORKER": False, **config})


@pytest.fixture
def s3_config():
    """Settings a test adds to the app's configuration."""
    return {}


@pytest.fixture
def s3_app(db_url, tmp_path, monkeypatch, s3_env, prefix, s3_config):
    """The app storing uploads in the test bucket under `prefix`."""
    from app.extensions import db

    app = _make_app(db_url, tmp_path, monkeypatch, f"s3://{BUCKET}/{prefix}", **s3_config)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def s3_client(s3_app, password_hash):
    from app.accounts.actor import Actor
    from app.accounts.users import create_user
    from app.extensions import db

    from .conftest import sign_in_as

    with s3_app.app_context(), db.engine.connect() as conn:
        user = create_user(conn, "admin", "admin", Actor(label="test"), password_hash=password_hash)
    client = s3_app.test_client()
    sign_in_as(client, user)
    return client


def keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])]


def api_upload(client, data: bytes):
    return client.post("/api/runs", data=data, content_type="application/json")


def run_json(client, run_id: int) -> dict:
    return client.get(f"/api/runs/{run_id}").get_json()


def test_an_upload_is_stored_under_its_sha256_and_loads_as_from_a_folder(s3_client, s3_app, s3, prefix):
    import hashlib

    content = SAMPLE_INPUT.read_bytes()
    assert upload(s3_client, content, "sample.json").status_code == 303
    sha = hashlib.sha256(content).hexdigest()
    assert keys(s3, prefix) == [f"{prefix}/{sha}"]
    assert s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{sha}")["Body"].read() == content
    assert s3_app.extensions["sluice_runs"].drain() == [1]
    page = text(s3_client.get("/runs/1"))
    assert "succeeded" in page and "kept" in page
    run = run_json(s3_client, 1)
    assert run["file_kept"] is True
    expected = json.loads(SAMPLE_SUMMARY.read_text())  # what the same file gives from a folder (test_api)
    assert {k: run["summary"][k] for k in expected} == expected


def test_the_same_content_twice_is_stored_once(s3_client, s3_app, s3, prefix):
    content = SAMPLE_INPUT.read_bytes()
    assert api_upload(s3_client, content).status_code == 202
    assert api_upload(s3_client, content).status_code == 202
    assert len(keys(s3, prefix)) == 1
    assert s3_app.extensions["sluice_runs"].drain() == [1, 2]
    assert run_json(s3_client, 2)["status"] == "succeeded"


class _Chunks(io.RawIOBase):
    """A stream of no known length, read block by block."""

    def __init__(self, blocks):
        self.blocks = iter(blocks)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        block = next(self.blocks, b"")
        buffer[:len(block)] = block
        return len(block)


@pytest.mark.parametrize("s3_config", [{"SLUICE_MAX_UPLOAD_BYTES": 100}])
def test_a_refused_upload_leaves_no_object(s3_client, s3_app, s3, prefix):
    from app.pipeline import TooLarge

    assert api_upload(s3_client, b"<html>not json</html>").status_code == 415
    assert api_upload(s3_client, b"[" + b" " * 200 + b"]").status_code == 413
    with pytest.raises(TooLarge):  # a body of no stated length: the store's own count refuses it part-way
        s3_app.extensions["sluice_runs"].submit(io.BufferedReader(_Chunks([b"[", b" " * 200, b"]"])), "big.json")
    assert keys(s3, prefix) == []
    assert s3_client.get("/api/runs").get_json()["items"] == []


def test_a_gzip_upload_is_read_back_from_the_object(s3_client, s3_app):
    records = SAMPLE_INPUT.read_bytes()
    assert api_upload(s3_client, gzip.compress(records)).status_code == 202
    s3_app.extensions["sluice_runs"].drain()
    assert run_json(s3_client, 1)["summary"]["inserted"] == 5


def test_a_retry_reads_the_object_again(s3_client, s3_app, s3, prefix):
    svc = s3_app.extensions["sluice_runs"]
    assert s3_client.post("/api/runs?max_reject_rate=0.1", data=SAMPLE_INPUT.read_bytes(),
                          content_type="application/json").status_code == 202
    svc.drain()
    failed = run_json(s3_client, 1)
    assert failed["status"] == "failed" and "reject threshold" in failed["error"]
    retry = s3_client.post("/api/runs/1/retry")
    assert retry.status_code == 202
    new_id = retry.get_json()["id"]
    assert svc.drain() == [new_id]
    again = run_json(s3_client, new_id)
    assert svc.queue.find(new_id).file_path == svc.queue.find(1).file_path == f"s3://{BUCKET}/{keys(s3, prefix)[0]}"
    assert again["summary"]["rejected"] == 2 and "reject threshold" in again["error"]  # read in full once more
    assert len(keys(s3, prefix)) == 1


def test_housekeeping_removes_the_object_and_the_run_page_says_so(s3_client, s3_app, s3, prefix):
    svc = s3_app.extensions["sluice_runs"]
    assert api_upload(s3_client, SAMPLE_INPUT.read_bytes()).status_code == 202
    svc.drain()
    (path,) = [f"s3://{BUCKET}/{key}" for key in keys(s3, prefix)]
    assert svc.housekeep() == []  # within the retention: kept
    assert svc.housekeep(now=utc_now() + svc.retention + timedelta(minutes=1)) == [path]
    assert keys(s3, prefix) == []
    page = text(s3_client.get("/runs/1"))
    assert "no longer stored" in page and "it cannot be retried" in page
    assert run_json(s3_client, 1)["file_kept"] is False


def test_a_missing_object_fails_the_run_clearly(s3_client, s3_app, s3, prefix):
    svc = s3_app.extensions["sluice_runs"]
    assert api_upload(s3_client, SAMPLE_INPUT.read_bytes()).status_code == 202
    for key in keys(s3, prefix):
        s3.delete_object(Bucket=BUCKET, Key=key)
    svc.drain()
    run = run_json(s3_client, 1)
    assert run["status"] == "failed" and "no longer stored" in run["error"]


def test_a_large_file_streams_through(s3_client, s3_app, s3, prefix):
    """About 40 MB (records padded with white space): uploaded in parts, read in ranged reads, all loaded."""
    line = json.loads(SAMPLE_INPUT.read_text())[0]
    n = 50_000
    body = b"".join(json.dumps({**line, "key": f"big-{i:06d}"}).encode() + b" " * 700 + b"\n" for i in range(n))
    assert len(body) > 30_000_000
    svc = s3_app.extensions["sluice_runs"]
    assert api_upload(s3_client, body).status_code == 202
    assert s3.head_object(Bucket=BUCKET, Key=keys(s3, prefix)[0])["ContentLength"] == len(body)
    svc.drain()
    run = run_json(s3_client, 1)
    assert run["status"] == "succeeded", run
    assert run["summary"]["inserted"] == n


@pytest.mark.parametrize("url, says", [
    ("ftp://example/uploads", "must be a folder, file:///folder or s3://bucket/prefix"),
    ("s3:///nobucket", "names no bucket"),
    ("s3://no-such-bucket/uploads", "cannot be used"),
])
def test_a_bad_upload_url_stops_the_start_with_one_line(db_url, tmp_path, monkeypatch, s3_env, url, says):
    with pytest.raises(SystemExit) as stopped:
        _make_app(db_url, tmp_path, monkeypatch, url)
    assert str(stopped.value).startswith("Sluice cannot start: SLUICE_UPLOAD_URL") and says in str(stopped.value)


def test_a_bad_scheme_in_the_environment_is_refused(db_url, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("SLUICE_UPLOAD_URL", "gs://bucket/uploads")
    with pytest.raises(SystemExit, match="SLUICE_UPLOAD_URL must be a folder"):
        create_app({"TESTING": True})


def test_a_file_url_names_a_local_folder_and_runs_record_plain_paths(db_url, tmp_path, monkeypatch):
    folder = tmp_path / "store"
    app = _make_app(db_url, tmp_path, monkeypatch, folder.as_uri())
    svc = app.extensions["sluice_runs"]
    stored = svc.store.put(io.BytesIO(SAMPLE_INPUT.read_bytes()))
    assert stored.path.parent == folder and svc.store.owns(str(stored.path))
