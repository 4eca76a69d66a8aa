"""The first administrator's one-time setup link (SPEC §11): announced while no user exists, used once."""
import logging
import re
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from app import create_app
from app.accounts.actor import Actor
from app.accounts.setup import check_setup_token, create_first_admin, setup_token
from app.accounts.users import AccountError, authenticate, count_users
from app.extensions import db
from app.models import AuditEntry

from .conftest import PASSWORD

VISITOR = Actor(label="anonymous", address="192.0.2.7")
ANNOUNCED = re.compile(r"^Sluice has no users yet: open (\S+) to create the first administrator "
                       r"\(or run: flask --app app users create NAME --role admin\)$")


def links(records) -> list[str]:
    """The setup links announced in these log records."""
    return [m.group(1) for r in records if r.levelno == logging.WARNING and (m := ANNOUNCED.match(r.getMessage()))]


def start_again(app, url: str | None = None):
    """Start another app on the same database and instance folder, as another process would."""
    again = create_app({"TESTING": True, "SECRET_KEY": "test", "SLUICE_EMBEDDED_WORKER": False,
                        "SQLALCHEMY_DATABASE_URI": url or app.config["SQLALCHEMY_DATABASE_URI"],
                        "SLUICE_UPLOAD_DIR": app.config["SLUICE_UPLOAD_DIR"]})
    with again.app_context():
        db.engine.dispose()
    return again


def files(app) -> tuple[Path, Path]:
    return Path(app.instance_path, "setup-token"), Path(app.instance_path, "setup-link.txt")


def token_of(app) -> str:
    return files(app)[0].read_text().strip()


def test_a_database_without_users_announces_the_link_in_the_log_and_a_file(app, caplog):
    (link,) = links(caplog.get_records("setup"))  # the app fixture's start
    token_file, link_file = files(app)
    assert link_file.read_text() == link + "\n"
    assert re.fullmatch(r"http://[^/]+/setup/[A-Za-z0-9_-]{43}", link)
    assert link.endswith("/setup/" + token_of(app))
    for path in (token_file, link_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert check_setup_token(app.instance_path, token_of(app))
    assert not check_setup_token(app.instance_path, token_of(app)[:-1] + "x")


def test_every_start_shares_one_token_and_uses_the_base_url(app, caplog, monkeypatch):
    monkeypatch.setenv("SLUICE_BASE_URL", "https://sluice.example.org/")
    first = token_of(app)
    with caplog.at_level(logging.WARNING):
        start_again(app)
        start_again(app)
    announced = links(caplog.records)
    assert announced == [f"https://sluice.example.org/setup/{first}"] * 2
    assert files(app)[1].read_text() == announced[-1] + "\n"


def test_starts_at_the_same_moment_share_one_token(tmp_path):
    together = threading.Barrier(12)
    got = []

    def start():
        together.wait()
        got.append(setup_token(str(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 12 and len(set(got)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["setup-token"]  # nothing left aside


def test_no_token_file_means_no_valid_token(tmp_path):
    assert not check_setup_token(str(tmp_path), "")
    (tmp_path / "setup-token").write_text("")  # an emptied file is not a token, and is replaced
    assert not check_setup_token(str(tmp_path), "")
    assert check_setup_token(str(tmp_path), setup_token(str(tmp_path)))


def test_the_setup_link_creates_the_first_administrator_once(app, engine):
    token = token_of(app)
    with engine.connect() as conn:
        root = create_first_admin(conn, app.instance_path, token, "root", PASSWORD, VISITOR)
        assert (root.name, root.role, root.created_by) == ("root", "admin", "anonymous")
        assert authenticate(conn, "root", PASSWORD).id == root.id
        with conn.begin():
            (entry,) = conn.execute(select(AuditEntry).where(AuditEntry.action == "setup")).all()
        assert (entry.object_type, entry.object_id, entry.address) == ("user", "root", "192.0.2.7")
        assert not any(p.exists() for p in files(app))
        assert not check_setup_token(app.instance_path, token)
        with pytest.raises(AccountError) as again:
            create_first_admin(conn, app.instance_path, token, "second", PASSWORD, VISITOR)
        assert again.value.code == "conflict"
        assert count_users(conn) == 1


def test_a_wrong_token_is_refused_and_the_link_still_works(app, engine):
    with engine.connect() as conn:
        with pytest.raises(AccountError) as refused:
            create_first_admin(conn, app.instance_path, "x" * 43, "root", PASSWORD, VISITOR)
        assert refused.value.code == "forbidden" and count_users(conn) == 0
        assert all(p.exists() for p in files(app))
        assert create_first_admin(conn, app.instance_path, token_of(app), "root", PASSWORD, VISITOR).role == "admin"


@pytest.mark.parametrize(("name", "password"), [("no spaces", PASSWORD), ("root", "short")])
def test_a_refused_name_or_password_keeps_the_link(app, engine, name, password):
    with engine.connect() as conn:
        with pytest.raises(AccountError) as refused:
            create_first_admin(conn, app.instance_path, token_of(app), name, password, VISITOR)
        assert refused.value.code == "invalid" and count_users(conn) == 0
    assert all(p.exists() for p in files(app))


def test_the_setup_link_is_refused_once_any_user_exists(app, engine, make_user):
    token = token_of(app)
    make_user("alice", "viewer")  # e.g. made from the command line
    with engine.connect() as conn:
        with pytest.raises(AccountError) as refused:
            create_first_admin(conn, app.instance_path, token, "root", PASSWORD, VISITOR)
        assert refused.value.code == "conflict" and count_users(conn) == 1
    assert not any(p.exists() for p in files(app))


def test_of_two_setups_at_once_only_one_succeeds(app, engine):
    token = token_of(app)
    together = threading.Barrier(2)
    outcomes = {}

    def setup(name):
        with engine.connect() as conn:
            together.wait()
            try:
                outcomes[name] = create_first_admin(conn, app.instance_path, token, name, PASSWORD, VISITOR).role
            except AccountError as exc:
                outcomes[name] = exc.code

    threads = [threading.Thread(target=setup, args=(name,)) for name in ("root", "toor")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["admin", "conflict"]
    with engine.connect() as conn:
        assert count_users(conn) == 1


def test_a_start_with_users_announces_nothing_and_removes_old_setup_files(app, make_user, caplog):
    make_user("root", "admin")
    with caplog.at_level(logging.WARNING):
        start_again(app)
    assert links(caplog.records) == []
    assert not any(p.exists() for p in files(app))


def test_an_unusable_database_announces_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    with caplog.at_level(logging.WARNING):
        broken = create_app({"TESTING": True, "SECRET_KEY": "test", "SLUICE_EMBEDDED_WORKER": False,
                             "SQLALCHEMY_DATABASE_URI": "sqlite:////nonexistent/dir/x.db"})
    assert broken.config["SLUICE_DB_ERROR"]
    assert links(caplog.records) == []
    assert not (tmp_path / "instance" / "setup-token").exists()
