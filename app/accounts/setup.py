"""The first administrator (SPEC §11): a one-time setup link while the database has no user.

The link's token lives in `instance/setup-token` (mode 0600). It is made once and shared by every
process that starts on the same instance folder, announced in the log and in `instance/setup-link.txt`,
and both files are deleted once a user exists.
"""
import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

from .actor import Actor
from .roles import ADMIN
from .users import AccountError, UserRow, count_users, create_user

TOKEN_FILE = "setup-token"
LINK_FILE = "setup-link.txt"
DEFAULT_BASE_URL = "http://127.0.0.1:5000"
MIN_TOKEN_LENGTH = 32  # secrets.token_urlsafe(32) gives 43 characters; anything shorter is not ours
log = logging.getLogger(__name__)


def base_url() -> str:
    """Where Sluice is reached, for the link: env `SLUICE_BASE_URL`, default http://127.0.0.1:5000."""
    return (os.environ.get("SLUICE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _read_token(path: Path) -> str | None:
    """The token in `path`; None when there is no file, "" when the file holds no token."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return ""
    return token if len(token) >= MIN_TOKEN_LENGTH else ""


def setup_token(instance_path: str) -> str:
    """The setup link's token: the one in `instance/setup-token`, or a new one written there once.

    Processes starting together all get the same token: the file appears whole, or not at all
    (written aside, then linked into place, which fails when another process linked its own first).
    """
    path = Path(instance_path) / TOKEN_FILE
    for _ in range(3):
        token = _read_token(path)
        if token:
            return token
        if token == "":  # a file that holds no token (emptied or edited by hand): replace it
            path.unlink(missing_ok=True)
        token = secrets.token_urlsafe(32)
        aside = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(token + "\n")
            os.link(aside, path)
            return token
        except FileExistsError:
            continue  # another process was first: read its token
        finally:
            aside.unlink(missing_ok=True)
    raise OSError(f"cannot create {path}: it keeps changing")


def setup_link(instance_path: str, base: str | None = None) -> str:
    """The setup link, `<base>/setup/<token>` (base: `base_url()` when not given)."""
    return f"{(base or base_url()).rstrip('/')}/setup/{setup_token(instance_path)}"


def check_setup_token(instance_path: str, token: str) -> bool:
    """Whether `token` is the setup link's (compared in constant time); False once the link is gone."""
    expected = _read_token(Path(instance_path) / TOKEN_FILE)
    if not expected or not isinstance(token, str):
        return False
    return secrets.compare_digest(expected.encode(), token.encode("utf-8", "surrogatepass"))


def create_first_admin(conn: Connection, instance_path: str, token: str, name: str, password: str,
                       actor: Actor) -> UserRow:
    """Create the first administrator through the setup link (audited `setup`); the link then stops working.

    Both conditions, no user yet and the right token, are checked in the transaction of the insert, so
    of two setups at once only one succeeds. AccountError: conflict when a user exists (sign in
    instead), forbidden when the token is not the link's, invalid for the name or password.
    """
    def only_first(locked: Connection) -> None:
        if count_users(locked):
            raise AccountError("conflict", "Sluice already has users: sign in instead")
        if not check_setup_token(instance_path, token):
            raise AccountError("forbidden", "this setup link is not valid: use the newest one from the log "
                               f"or from instance/{LINK_FILE}")

    try:
        user = create_user(conn, name, ADMIN, actor, password=password, action="setup", guard=only_first)
    except AccountError as exc:
        if exc.code == "conflict" and count_users(conn):
            forget_setup(instance_path)  # users exist: a leftover link is of no use to anyone
        raise
    forget_setup(instance_path)
    return user


def forget_setup(instance_path: str) -> None:
    """Delete the setup link's files (once a user exists)."""
    for name in (TOKEN_FILE, LINK_FILE):
        (Path(instance_path) / name).unlink(missing_ok=True)


def _write_link_file(instance_path: str, link: str) -> None:
    path = Path(instance_path) / LINK_FILE
    aside = path.with_name(f".{LINK_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(link + "\n")
    os.replace(aside, path)  # whole, and never half-written for a reader


def announce_setup(engine: Engine, instance_path: str, logger: logging.Logger = log,
                   base: str | None = None) -> str | None:
    """At start: with no user, log the setup link (WARNING) and write it to instance/setup-link.txt.

    Returns the link, or None when users exist (then leftover setup files are deleted).
    """
    with engine.connect() as conn:
        if count_users(conn):
            forget_setup(instance_path)
            return None
    try:
        link = setup_link(instance_path, base)
    except OSError as exc:  # an instance folder it cannot write: the command line still works
        logger.warning("Sluice has no users yet, and no setup link (%s: %s): run flask --app app users "
                       "create NAME --role admin", exc.strerror or exc, exc.filename or instance_path)
        return None
    logger.warning("Sluice has no users yet: open %s to create the first administrator "
                   "(or run: flask --app app users create NAME --role admin)", link)
    try:
        _write_link_file(instance_path, link)
    except OSError as exc:  # the log line above is enough to go on with
        logger.warning("could not write %s: %s", Path(instance_path) / LINK_FILE, exc.strerror or exc)
    return link
