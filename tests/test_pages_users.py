"""The administrators' users page: create, set a role, disable and enable; refused to others and without CSRF."""
import re

from .conftest import PASSWORD, sign_in_as
from .test_pages_account import TOKEN_RE, audit_actions, make_token, sign_in, token
from .test_pages_helpers import text

NEW_PASSWORD = "an initial passphrase"


def create(client, name: str, role: str = "viewer", password: str = NEW_PASSWORD, again: str | None = None):
    return client.post("/users", data={"csrf_token": token(client, "/users"), "username": name, "role": role,
                                       "new": password, "again": password if again is None else again})


def post(client, url: str, **data):
    return client.post(url, data={"csrf_token": token(client, "/users"), **data})


def row(client, name: str) -> str:
    """The users table's row of `name`."""
    body = text(client.get("/users"))
    rows = [r for r in re.findall(r"<tr id=\"user-\d+\".*?</tr>", body, re.DOTALL) if f"<td>{name}" in r]
    assert len(rows) == 1, body
    return rows[0]


def role_of(client, name: str) -> str:
    """The role the users page shows for `name` (the selected one of its role form)."""
    return re.search(r'<option value="(\w+)" selected>', row(client, name)).group(1)


def test_an_admin_creates_a_user_who_can_then_sign_in(app, client):
    response = create(client, "Vera", "operator")
    assert response.status_code == 303
    assert "User Vera (operator) is created" in text(client.get("/users"))
    vera = row(client, "Vera")
    assert role_of(client, "Vera") == "operator" and "active" in vera and "by admin" in vera
    assert ("user_create", "admin", "Vera", "127.0.0.1") in audit_actions(app)
    assert sign_in(app.test_client(), "vera", NEW_PASSWORD).status_code == 302


def test_creating_a_user_says_what_is_wrong(client, make_user):
    make_user("vera", "viewer")
    taken = create(client, "VERA")
    assert taken.status_code == 409 and "there is already a user named" in text(taken)
    bad = create(client, "no spaces")
    assert bad.status_code == 400 and "a user name is 1 to 64 letters" in text(bad)
    short = create(client, "walt", password="short")
    assert short.status_code == 400 and "at least 8 characters" in text(short)
    differ = create(client, "walt", again=NEW_PASSWORD + "!")
    assert differ.status_code == 400 and "the two passwords differ" in text(differ)
    assert "walt" not in text(client.get("/users"))


def test_an_admin_sets_a_role(app, client, make_user):
    make_user("vera", "viewer")
    response = post(client, "/users/vera/role", role="operator")
    assert response.status_code == 303
    assert "vera is now operator." in text(client.get("/users")) and role_of(client, "vera") == "operator"
    assert ("user_set_role", "admin", "vera", "127.0.0.1") in audit_actions(app)
    refused = post(client, "/users/admin/role", role="viewer")  # the last active administrator
    assert refused.status_code == 303
    assert "Not changed: the last active administrator" in text(client.get("/users"))
    assert role_of(client, "admin") == "admin"


def test_disabling_stops_a_users_session_and_token_at_once(app, client, make_user):
    vera_client = app.test_client()
    sign_in_as(vera_client, make_user("vera", "operator"))
    secret = TOKEN_RE.search(text(make_token(vera_client, "script"))).group(0)
    bearer = {"Authorization": f"Bearer {secret}"}
    assert vera_client.get("/runs").status_code == 200
    response = post(client, "/users/vera/disable")
    assert response.status_code == 303
    assert "vera is disabled" in text(client.get("/users")) and "disabled" in row(client, "vera")
    assert vera_client.get("/runs").status_code == 302
    assert vera_client.get("/api/runs", headers=bearer).status_code == 401
    assert sign_in(app.test_client(), "vera").status_code == 401
    assert ("user_disable", "admin", "vera", "127.0.0.1") in audit_actions(app)

    assert post(client, "/users/vera/enable").status_code == 303
    assert "vera is enabled again." in text(client.get("/users"))
    assert vera_client.get("/runs").status_code == 302  # the old session stays ended
    assert sign_in(app.test_client(), "vera", PASSWORD).status_code == 302
    assert vera_client.get("/api/runs", headers=bearer).status_code == 200
    assert ("user_enable", "admin", "vera", "127.0.0.1") in audit_actions(app)


def test_the_last_active_administrator_cannot_be_disabled(client):
    post(client, "/users/admin/disable")
    assert "Not changed: the last active administrator cannot be disabled" in text(client.get("/users"))
    assert client.get("/runs").status_code == 200


def test_an_unknown_user_is_not_found(client):
    post(client, "/users/nobody/disable")
    assert "Not changed: there is no user named &#39;nobody&#39;" in text(client.get("/users"))


def test_only_an_admin_may_use_the_users_page(app, make_user):
    for role in ("viewer", "operator"):
        other = app.test_client()
        sign_in_as(other, make_user(f"{role}-user", role))
        assert other.get("/users").status_code == 403
        assert 'href="/users"' not in text(other.get("/runs"))
        csrf = token(other, "/account")
        assert other.post("/users", data={"csrf_token": csrf, "username": "x", "role": "admin",
                                          "new": NEW_PASSWORD, "again": NEW_PASSWORD}).status_code == 403
        assert other.post("/users/admin/disable", data={"csrf_token": csrf}).status_code == 403
    anonymous = app.test_client()
    assert anonymous.get("/users").status_code == 302


def test_the_users_forms_need_their_csrf_token(client, make_user):
    make_user("vera", "viewer")
    assert client.post("/users", data={"username": "x", "role": "admin", "new": NEW_PASSWORD,
                                       "again": NEW_PASSWORD}).status_code == 400
    assert client.post("/users/vera/role", data={"role": "admin"}).status_code == 400
    assert client.post("/users/vera/disable").status_code == 400
    assert "x" not in [n for n in re.findall(r"<td>([^<]+)", text(client.get("/users")))]
    assert "active" in row(client, "vera") and role_of(client, "vera") == "viewer"


def test_the_header_links_users_for_admins(client):
    body = text(client.get("/runs"))
    assert 'href="/users"' in body and 'href="/account"' in body


def test_the_header_links_the_audit_log_for_admins_once_it_exists(app, client, make_user):
    has_audit = "audit.index" in app.view_functions  # the audit page is another part's
    assert ('>Audit</a>' in text(client.get("/runs"))) == has_audit
    operator = app.test_client()
    sign_in_as(operator, make_user("olga", "operator"))
    assert '>Audit</a>' not in text(operator.get("/runs"))
