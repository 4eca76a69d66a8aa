"""Signing in and out, the first administrator's setup link, one's account (password) and API tokens."""
import logging
import re

import pytest

from app.accounts.setup import setup_token
from app.extensions import db
from app.models import AuditEntry

from .conftest import PASSWORD, sign_in_as
from .test_pages_helpers import text, token

NEW_PASSWORD = "a new and longer passphrase"
TOKEN_RE = re.compile(r"sluice_[A-Za-z0-9_-]{43}")


def audit_actions(app) -> list[tuple]:
    """(action, actor, object_id, address) of every audit entry, oldest first."""
    with app.app_context(), db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(db.select(AuditEntry.action, AuditEntry.actor, AuditEntry.object_id,
                                                         AuditEntry.address).order_by(AuditEntry.id))]


def sign_in(client, name: str, password: str = PASSWORD, next_: str | None = None):
    data = {"csrf_token": token(client, "/sign-in"), "username": name, "password": password}
    if next_ is not None:
        data["next"] = next_
    return client.post("/sign-in", data=data)


# --- sign in and out -------------------------------------------------------------------------------

def test_sign_in_goes_to_next_and_the_header_says_who(anon_client, make_user):
    make_user("olga", "operator")
    response = anon_client.get("/runs?page=2")
    assert response.status_code == 302 and "/sign-in?next=/runs?page%3D2" in response.headers["Location"]
    response = sign_in(anon_client, "Olga", next_="/runs?page=2")
    assert response.status_code == 302 and response.headers["Location"] == "/runs?page=2"
    body = text(anon_client.get("/runs"))
    assert '<strong id="who-name">olga</strong> <span class="role" id="who-role">operator</span>' in body
    assert 'action="/sign-out"' in body and 'href="/account"' in body
    assert 'href="/users"' not in body  # an operator is no administrator


@pytest.mark.parametrize("target", ["//evil.com", "https://evil.com", "/\\evil.com", "http:/evil.com",
                                    "javascript:alert(1)"])
def test_sign_in_never_goes_to_another_site(anon_client, make_user, target):
    make_user("olga", "operator")
    response = sign_in(anon_client, "olga", next_=target)
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_a_failed_sign_in_says_so_and_is_audited(app, anon_client, make_user):
    make_user("olga", "operator")
    response = sign_in(anon_client, "olga", "not the password")
    assert response.status_code == 401
    assert "The user name or the password is wrong" in text(response)
    assert anon_client.get("/").status_code == 302  # still signed out
    assert ("sign_in_failed", "anonymous", "olga", "127.0.0.1") in audit_actions(app)


def test_the_signed_out_header_offers_sign_in_and_names_no_dataset(anon_client, make_user):
    make_user("olga", "operator")
    body = text(anon_client.get("/sign-in"))
    assert 'id="dataset-switcher"' not in body and 'action="/sign-out"' not in body
    assert 'href="/sign-in"' in text(anon_client.get("/no-such-page"))


def test_sign_in_is_throttled_per_user_name(app, anon_client, make_user):
    app.config["SLUICE_SIGN_IN_LIMIT_PER_NAME"] = "3 per minute"
    make_user("olga", "operator")
    assert [sign_in(anon_client, "olga", "wrong").status_code for _ in range(3)] == [401] * 3
    response = sign_in(anon_client, "olga", PASSWORD)  # even the right password waits now
    assert response.status_code == 429
    assert "Too many failed sign-ins" in text(response)
    assert ("sign_in_throttled", "anonymous", "olga", "127.0.0.1") in audit_actions(app)
    assert sign_in(anon_client, "someone-else", "wrong").status_code == 401  # another name is not held up


def test_sign_in_is_throttled_per_address(app, anon_client, make_user):
    app.config["SLUICE_SIGN_IN_LIMIT_PER_ADDRESS"] = "3 per minute"
    make_user("olga", "operator")
    assert [sign_in(anon_client, f"name{i}", "wrong").status_code for i in range(3)] == [401] * 3
    response = sign_in(anon_client, "olga", PASSWORD)
    assert response.status_code == 429 and "from this address" in text(response)
    assert audit_actions(app)[-1][0] == "sign_in_throttled"


def test_sign_out_ends_the_session_and_needs_its_csrf_token(app, client):
    assert client.post("/sign-out").status_code == 400  # no CSRF token: refused, still signed in
    assert client.get("/runs").status_code == 200
    response = client.post("/sign-out", data={"csrf_token": token(client, "/runs")})
    assert response.status_code == 302 and response.headers["Location"].endswith("/sign-in")
    assert client.get("/runs").status_code == 302
    assert audit_actions(app)[-1][:2] == ("sign_out", "admin")


# --- the first administrator -------------------------------------------------------------------------

def test_the_setup_link_makes_the_first_administrator_once(app, anon_client):
    link = f"/setup/{setup_token(app.instance_path)}"
    page = anon_client.get(link)
    assert page.status_code == 200 and "Create the first administrator" in text(page)
    short = anon_client.post(link, data={"csrf_token": token(anon_client, link), "username": "root",
                                         "new": "short", "again": "short"})
    assert short.status_code == 400 and "at least 8 characters" in text(short)
    differ = anon_client.post(link, data={"csrf_token": token(anon_client, link), "username": "root",
                                          "new": NEW_PASSWORD, "again": NEW_PASSWORD + "!"})
    assert differ.status_code == 400 and "the two passwords differ" in text(differ)
    response = anon_client.post(link, data={"csrf_token": token(anon_client, link), "username": "root",
                                            "new": NEW_PASSWORD, "again": NEW_PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    body = text(anon_client.get("/"))  # signed in, as an administrator
    assert '<strong id="who-name">root</strong> <span class="role" id="who-role">admin</span>' in body
    assert 'href="/users"' in body
    assert ("setup", "setup link", "root", "127.0.0.1") in audit_actions(app)
    assert "by setup link" in text(anon_client.get("/account"))
    again = app.test_client().get(link)  # used: not valid any more
    assert again.status_code == 404 and "not valid" in text(again)


def test_the_setup_link_is_not_valid_once_a_user_exists(app, anon_client, make_user):
    link = f"/setup/{setup_token(app.instance_path)}"
    make_user("olga", "admin")
    response = anon_client.get(link)
    assert response.status_code == 404 and "Sign in instead" in text(response)
    csrf = token(anon_client, "/sign-in")
    post = anon_client.post(link, data={"csrf_token": csrf, "username": "mallory", "new": NEW_PASSWORD,
                                        "again": NEW_PASSWORD})
    assert post.status_code == 404
    assert "mallory" not in str(audit_actions(app))


def test_a_wrong_setup_token_is_not_valid(app, anon_client):
    setup_token(app.instance_path)
    assert anon_client.get("/setup/" + "x" * 43).status_code == 404


# --- the account page: password -------------------------------------------------------------------

def change_password(client, current: str, new: str, again: str | None = None):
    return client.post("/account", data={"csrf_token": token(client, "/account"), "current": current,
                                         "new": new, "again": new if again is None else again})


def test_the_account_page_shows_name_and_role(app, make_user):
    viewer = app.test_client()
    sign_in_as(viewer, make_user("vera", "viewer"))
    body = text(viewer.get("/account"))
    assert "<h2>vera</h2>" in body and '<span class="role viewer">viewer</span>' in body


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(app, make_user):
    vera = make_user("vera", "viewer")
    here, elsewhere = app.test_client(), app.test_client()
    sign_in_as(here, vera)
    sign_in_as(elsewhere, vera)
    response = change_password(here, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 303
    assert "Your password is changed" in text(here.get("/account"))
    assert here.get("/runs").status_code == 200
    assert elsewhere.get("/runs").status_code == 302  # sent to sign in again
    assert ("password_change", "vera", "vera", "127.0.0.1") in audit_actions(app)
    assert sign_in(app.test_client(), "vera", PASSWORD).status_code == 401
    assert sign_in(app.test_client(), "vera", NEW_PASSWORD).status_code == 302


def test_a_wrong_current_password_changes_nothing(app, make_user):
    vera = make_user("vera", "viewer")
    here, elsewhere = app.test_client(), app.test_client()
    sign_in_as(here, vera)
    sign_in_as(elsewhere, vera)
    response = change_password(here, "not my password", NEW_PASSWORD)
    assert response.status_code == 400 and "the current password is wrong" in text(response)
    mismatch = change_password(here, PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x")
    assert mismatch.status_code == 400 and "the two passwords differ" in text(mismatch)
    assert elsewhere.get("/runs").status_code == 200
    assert sign_in(app.test_client(), "vera", PASSWORD).status_code == 302


def test_the_password_form_needs_its_csrf_token(client):
    response = client.post("/account", data={"current": PASSWORD, "new": NEW_PASSWORD, "again": NEW_PASSWORD})
    assert response.status_code == 400


# --- API tokens -----------------------------------------------------------------------------------

def make_token(client, name: str = "deploy", role: str = "viewer", expires_days: str = ""):
    return client.post("/account/tokens", data={"csrf_token": token(client, "/account/tokens"), "name": name,
                                                 "role": role, "expires_days": expires_days})


def test_a_new_token_is_shown_once_and_never_again(app, client, caplog):
    caplog.set_level(logging.DEBUG)
    response = make_token(client, "deploy", "operator", "30")
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    body = text(response)
    secrets = TOKEN_RE.findall(body)
    assert len(set(secrets)) == 1 and "Sluice shows it only this once" in body
    assert 'name="name" type="text" value=""' in body  # the form is blank again for another token
    secret = secrets[0]
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    listed = text(client.get("/account/tokens"))
    assert 'id="tokens"' in listed and "deploy" in listed and secret[:11] + "…" in listed
    for url in ("/account/tokens", "/account/tokens?all=1", "/account", "/", "/runs"):
        assert secret not in text(client.get(url)), url
    assert secret not in caplog.text
    assert secret not in str(audit_actions(app))


def test_a_token_role_is_at_most_ones_own(app, make_user):
    viewer = app.test_client()
    sign_in_as(viewer, make_user("vera", "viewer"))
    form = text(viewer.get("/account/tokens"))
    assert re.findall(r'<option[^>]* value="(\w+)"', form) == ["viewer"]
    assert make_token(viewer, "sneaky", "admin").status_code == 400
    made = make_token(viewer, "readonly")  # a viewer may make a viewer token
    assert made.status_code == 201
    assert "Your new token readonly (viewer)" in text(made)


def test_revoking_a_token_stops_it(app, client):
    secret = TOKEN_RE.search(text(make_token(client))).group(0)
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/runs", headers=bearer).status_code == 200
    assert client.post("/account/tokens/1/revoke").status_code == 400  # CSRF
    response = client.post("/account/tokens/1/revoke", data={"csrf_token": token(client, "/account/tokens")})
    assert response.status_code == 303
    assert "Token &#39;deploy&#39; of admin is revoked." in text(client.get("/account/tokens"))
    assert client.get("/api/runs", headers=bearer).status_code == 401
    assert audit_actions(app)[-1][:3] == ("token_revoke", "admin", "1")


def test_an_admin_sees_and_revokes_every_users_tokens(app, client, make_user):
    olga = app.test_client()
    sign_in_as(olga, make_user("olga", "operator"))
    make_token(olga, "olgas-script")
    mine = text(client.get("/account/tokens"))
    assert "olgas-script" not in mine and 'href="/account/tokens?all=1"' in mine
    every = text(client.get("/account/tokens?all=1"))
    assert "olgas-script" in every and "<td>olga</td>" in every
    response = client.post("/account/tokens/1/revoke?all=1",
                           data={"csrf_token": token(client, "/account/tokens")})
    assert response.status_code == 303 and response.headers["Location"] == "/account/tokens?all=1"
    assert "by admin" in text(olga.get("/account/tokens"))


def test_another_users_token_cannot_be_revoked_by_a_non_admin(app, client, make_user):
    secret = TOKEN_RE.search(text(make_token(client, "admins"))).group(0)
    olga = app.test_client()
    sign_in_as(olga, make_user("olga", "operator"))
    assert "admins" not in text(olga.get("/account/tokens?all=1"))
    response = olga.post("/account/tokens/1/revoke", data={"csrf_token": token(olga, "/account/tokens")})
    assert response.status_code == 404
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
