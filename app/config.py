"""Defaults and the environment: one absolute database URL for the web app, the CLI and the benchmark."""
import os
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .pipeline import Settings

MiB = 1024 ** 2
GiB = 1024 ** 3


def database_url(instance_path: str) -> str:
    """Return `DATABASE_URL`, or the default SQLite file in the instance folder, as an absolute URL."""
    raw = os.environ.get("DATABASE_URL") or f"sqlite:///{Path(instance_path) / 'sluice.db'}"
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return raw  # create_app reports it as an unusable database URL
    # A relative SQLite path would be resolved against the working directory by a plain
    # create_engine but against the instance folder by Flask-SQLAlchemy: make it absolute here.
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not path.is_absolute():
            path = Path(instance_path) / path
        url = url.set(database=str(path))
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _url_secrets(url: str) -> list[str]:
    """The password of a database URL, and the pieces of it a mistyped URL scatters elsewhere, longest first.

    Read from the raw text, not from a parsed URL: an unescaped `@` in a password makes SQLAlchemy take
    the rest of the password for the host name, which then appears in the driver's error.
    """
    _, sep, rest = url.partition("://")
    match = re.match(r"[^:/@]*:(.*)@", rest.partition("?")[0]) if sep else None
    if not match or not match.group(1):
        return []
    password = match.group(1)
    pieces = {password, unquote(password), *(p for p in re.split(r"[@:/]", password) if len(p) >= 3)}
    return sorted(pieces, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """One line of `text` (an error about the database at `url`) with the URL's password replaced by ***."""
    line = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    for secret in _url_secrets(url):
        line = line.replace(secret, "***")
    return line


def database_url_problem(url: str) -> str | None:
    """None when `url` is a database URL whose driver is installed; else one line saying why, password redacted."""
    try:
        # Parses the URL, loads its driver and checks its arguments; connects to nothing.
        create_engine(url).dispose()
    except ValueError as exc:  # from int(port)
        return redact(f"DATABASE_URL is not a valid URL: its port is not a number ({exc})", url)
    except (ArgumentError, ImportError, TypeError) as exc:  # not a URL, unknown dialect, no driver
        return redact(f"DATABASE_URL is not usable: {exc}", url)
    return None


def secret_key(instance_path: str) -> str:
    """Return SECRET_KEY from the environment, or one generated once into the instance folder."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


class ConfigError(ValueError):
    """A setting in the environment cannot be used; the message names it and says what it must be."""


def _number(name: str, default, kind=int, minimum=0):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what} of at least {minimum}, not {raw[:40]!r}") from None
    return value


def _int(name: str, default: int) -> int:
    return _number(name, default, int)


LOOPBACK_HOSTS = "localhost,127.0.0.1,[::1]"


def trusted_hosts(value: str) -> list[str]:
    """The host names of `SLUICE_TRUSTED_HOSTS` (comma-separated, any port), lower case, IPv6 in brackets.

    A leading dot trusts every subdomain (`.example.com`), as in Werkzeug.
    """
    names = []
    for name in value.split(","):
        name = name.strip().lower()
        if not name:
            continue
        if name.startswith("[") and "]" in name:  # [::1] or [::1]:5000
            name = name[:name.index("]") + 1]
        elif name.count(":") > 1:  # a bare IPv6 address: ::1
            name = f"[{name}]"
        else:
            name = name.partition(":")[0]  # the port does not matter
        names.append(name)
    return names


UPLOAD_SCHEMES = ("file", "s3", "s3a")


def upload_url(value: str) -> str | None:
    """`SLUICE_UPLOAD_URL` checked for its scheme (a plain path has none), or None when unset."""
    value = value.strip()
    if not value:
        return None
    if "://" in value and value.partition("://")[0].lower() not in UPLOAD_SCHEMES:
        raise ConfigError(f"SLUICE_UPLOAD_URL must be a folder, file:///folder or s3://bucket/prefix, "
                          f"not {value[:80]!r}")
    return value


EXECUTORS = ("embedded", "queue")


def executor_name(value: str) -> str:
    """`SLUICE_EXECUTOR` checked: embedded (the default) or queue."""
    value = value.strip().lower() or "embedded"
    if value not in EXECUTORS:
        raise ConfigError(f"SLUICE_EXECUTOR must be embedded or queue, not {value[:40]!r}")
    return value


def defaults(instance_path: str) -> dict:
    """The configuration of a Sluice app, read from the environment (`SLUICE_*`) with defaults."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        "SECRET_KEY": secret_key(instance_path),
        # Every request body is small but an upload's: the two upload endpoints raise the limit for
        # themselves (`request.max_content_length`), so no other route reads a large body.
        "MAX_CONTENT_LENGTH": _int("SLUICE_MAX_REQUEST_BYTES", 1 * MiB),
        "SLUICE_MAX_UPLOAD_BYTES": _int("SLUICE_MAX_UPLOAD_BYTES", 1 * GiB),
        "SLUICE_MAX_DECOMPRESSED_BYTES": _int("SLUICE_MAX_DECOMPRESSED_BYTES", 4 * GiB),
        "SLUICE_MAX_RECORD_BYTES": _int("SLUICE_MAX_RECORD_BYTES", 16 * MiB),
        "SLUICE_FUTURE_TOLERANCE_SECONDS": _int("SLUICE_FUTURE_TOLERANCE_SECONDS", 86400),
        "SLUICE_UPLOAD_DIR": os.environ.get("SLUICE_UPLOAD_DIR", str(Path(instance_path) / "uploads")),
        # Where uploads are stored: a folder (a path or file:///folder) or s3://bucket/prefix; when
        # unset, SLUICE_UPLOAD_DIR (its older name) or the instance folder's uploads/.
        "SLUICE_UPLOAD_URL": upload_url(os.environ.get("SLUICE_UPLOAD_URL", "")),
        "SLUICE_FILE_RETENTION_HOURS": _int("SLUICE_FILE_RETENTION_HOURS", 24 * 7),
        "SLUICE_EMBEDDED_WORKER": os.environ.get("SLUICE_EMBEDDED_WORKER", "1") != "0",
        # Who executes queued runs: a thread of each web process (embedded), or workers started with
        # `flask --app app worker` on any host, through procrastinate's queue in PostgreSQL (queue).
        "SLUICE_EXECUTOR": executor_name(os.environ.get("SLUICE_EXECUTOR", "")),
        "SLUICE_RUN_LEASE_SECONDS": _int("SLUICE_RUN_LEASE_SECONDS", 60),
        "SLUICE_HEARTBEAT_SECONDS": _int("SLUICE_HEARTBEAT_SECONDS", 5),
        "SLUICE_PROGRESS_INTERVAL": _number("SLUICE_PROGRESS_INTERVAL", 0.5, float, minimum=0.01),
        "WTF_CSRF_TIME_LIMIT": None,
        # Host names this app answers for; any other Host header gets a 400 (against DNS rebinding).
        "SLUICE_TRUSTED_HOSTS": trusted_hosts(os.environ.get("SLUICE_TRUSTED_HOSTS", LOOPBACK_HOSTS)),
        # The session cookie (it carries the CSRF secret): never sent by cross-site subrequests or
        # posts, never readable by scripts, and only over HTTPS once Sluice is served behind it.
        "SESSION_COOKIE_SAMESITE":
            "Strict" if os.environ.get("SLUICE_SESSION_COOKIE_SAMESITE", "").lower() == "strict" else "Lax",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SECURE": os.environ.get("SLUICE_SESSION_COOKIE_SECURE", "0") == "1",
        # How many proxies (nginx, caddy) stand in front and set X-Forwarded-For/-Proto/-Host: their
        # values are then trusted for the client's address (audit, throttling) and for https.
        "SLUICE_PROXY_HOPS": _int("SLUICE_PROXY_HOPS", 0),
        # Failed sign-ins allowed before the form answers 429 (Flask-Limiter's notation).
        "SLUICE_SIGN_IN_LIMIT_PER_NAME": os.environ.get("SLUICE_SIGN_IN_LIMIT_PER_NAME", "5 per minute; 30 per hour"),
        "SLUICE_SIGN_IN_LIMIT_PER_ADDRESS": os.environ.get("SLUICE_SIGN_IN_LIMIT_PER_ADDRESS", "20 per minute"),
        # Where the throttle counts: memory:// is per process; redis://host:6379 shares them between processes.
        "RATELIMIT_STORAGE_URI": os.environ.get("SLUICE_RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_HEADERS_ENABLED": True,
    }


def pipeline_settings(config: Mapping) -> Settings:
    """The pipeline's limits from an app's configuration (`app.config`)."""
    return Settings(
        max_decompressed_bytes=config["SLUICE_MAX_DECOMPRESSED_BYTES"],
        future_tolerance=timedelta(seconds=config["SLUICE_FUTURE_TOLERANCE_SECONDS"]),
        max_upload_bytes=config["SLUICE_MAX_UPLOAD_BYTES"],
        max_record_bytes=config["SLUICE_MAX_RECORD_BYTES"],
    )
