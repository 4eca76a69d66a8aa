"""API tokens over the API: make, list and revoke with a bearer token or a session; roles; who sees what."""
import pytest
from sqlalchemy import update

from app.accounts.actor import Actor
from app.accounts.users import set_role
from app.extensions import db
from app.models import ApiToken

from .conftest import sign_in_as
from .test_pages_account import audit_actions


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code
    return response.get_json()["error"]["message"]


@pytest.fixture
def operator(app, make_user):
    """A test client signed in as the operator olga."""
    client = app.test_client()
    sign_in_as(client, make_user("olga", "operator"))
    return client


def make(client, headers=None, **body):
    return client.post("/api/tokens", json=body, headers=headers or {})


def test_a_session_makes_a_token_that_authenticates(app, operator):
    response = make(operator, name="deploy", expires_days=30)
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    made = response.get_json()
    assert made["token"].startswith("sluice_") and len(made["token"]) == 50
    assert made["user"] == "olga" and made["role"] == "operator" and made["name"] == "deploy"
    assert made["hint"] == made["token"][:11] and made["expires_at"] > made["created_at"]
    assert made["revoked_at"] is None and made["url"] == f"/api/tokens/{made['id']}"
    fresh = app.test_client()  # a script: no session, only the token
    assert fresh.get("/api/runs", headers=bearer(made["token"])).status_code == 200
    listed = fresh.get("/api/tokens", headers=bearer(made["token"])).get_json()["items"]
    assert [t["name"] for t in listed] == ["deploy"] and listed[0]["last_used_at"] is not None
    assert all("token" not in t for t in listed)
    assert made["token"] not in str(audit_actions(app))
    assert ("token_create", "olga", str(made["id"]), "127.0.0.1") in audit_actions(app)


def test_a_token_makes_and_revokes_tokens(app, operator):
    first = make(operator, name="first").get_json()
    script = app.test_client()
    second = make(script, bearer(first["token"]), name="second", role="viewer")
    assert second.status_code == 201 and second.get_json()["role"] == "viewer"
    gone = script.delete(f"/api/tokens/{second.get_json()['id']}", headers=bearer(first["token"]))
    assert gone.status_code == 200 and gone.get_json()["revoked_at"] is not None
    assert gone.get_json()["revoked_by"] == "olga (token first)"
    assert script.get("/api/runs", headers=bearer(second.get_json()["token"])).status_code == 401
    again = script.delete(f"/api/tokens/{second.get_json()['id']}", headers=bearer(first["token"]))
    assert again.status_code == 200  # revoking twice changes nothing
    assert [a[0] for a in audit_actions(app)].count("token_revoke") == 1


def test_a_role_above_ones_own_is_refused(app, operator):
    assert "at most" in error(make(operator, name="x", role="admin"), 403, "forbidden")
    viewer_token = make(operator, name="v", role="viewer").get_json()["token"]
    script = app.test_client()
    # A viewer token cannot make an operator token, though its user could.
    assert "at most" in error(make(script, bearer(viewer_token), name="x", role="operator"), 403, "forbidden")
    assert make(script, bearer(viewer_token), name="y").get_json()["role"] == "viewer"  # default: its own


@pytest.mark.parametrize("body, code", [
    ({}, "bad_request"), ({"name": ""}, "invalid"), ({"name": "   "}, "invalid"),
    ({"name": "x" * 65}, "bad_request"), ({"name": "x", "role": "root"}, "bad_request"),
    ({"name": "x", "expires_days": 0}, "bad_request"), ({"name": "x", "expires_days": 3651}, "bad_request"),
    ({"name": "x", "expires_days": "7"}, "bad_request"), ({"name": "x", "secret": "mine"}, "bad_request"),
])
def test_a_bad_body_is_refused(operator, body, code):
    error(make(operator, **body), 400, code)


def test_an_operator_cannot_see_or_revoke_an_admins_token(app, client, operator):
    admins = make(client, name="admin-script").get_json()
    assert operator.get("/api/tokens").get_json()["items"] == []
    error(operator.get("/api/tokens?all=true"), 403, "forbidden")
    error(operator.delete(f"/api/tokens/{admins['id']}"), 404, "not_found")
    assert app.test_client().get("/api/runs", headers=bearer(admins["token"])).status_code == 200


def test_an_admin_sees_and_revokes_every_token(app, client, operator):
    olgas = make(operator, name="olga-script").get_json()
    make(client, name="admin-script")
    assert [t["name"] for t in client.get("/api/tokens").get_json()["items"]] == ["admin-script"]
    every = client.get("/api/tokens?all=true").get_json()["items"]
    assert [(t["user"], t["name"]) for t in every] == [("admin", "admin-script"), ("olga", "olga-script")]
    response = client.delete(f"/api/tokens/{olgas['id']}")
    assert response.status_code == 200 and response.get_json()["revoked_by"] == "admin"
    assert "not valid" in error(app.test_client().get("/api/runs", headers=bearer(olgas["token"])), 401,
                                "unauthorized")


def test_an_expired_or_unknown_token_is_refused(app, operator):
    made = make(operator, name="short", expires_days=1).get_json()
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.id == made["id"]).values(expires_at="2000-01-01T00:00:00"))
    script = app.test_client()
    response = script.get("/api/tokens", headers=bearer(made["token"]))
    error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error(script.get("/api/tokens", headers=bearer("sluice_" + "A" * 43)), 401, "unauthorized")
    error(script.get("/api/tokens"), 401, "unauthorized")


def test_an_unknown_token_id_is_not_found(client):
    error(client.delete("/api/tokens/999"), 404, "not_found")
    error(client.delete(f"/api/tokens/{2 ** 63 - 1}"), 404, "not_found")


def test_a_cross_site_cookie_request_is_refused(operator):
    response = operator.post("/api/tokens", json={"name": "x"}, headers={"Origin": "https://evil.example"})
    error(response, 403, "cross_site")
    assert operator.get("/api/tokens").get_json()["items"] == []


def test_the_openapi_document_describes_the_tokens(app):
    spec = app.test_client().get("/api/openapi.json").get_json()
    assert set(spec["paths"]["/api/tokens"]) == {"get", "post"}
    assert set(spec["paths"]["/api/tokens/{token_id}"]) == {"delete"}
    new = spec["components"]["schemas"]["NewToken"]
    assert "token" in new["required"] and "secret_hash" not in new["properties"]


def test_a_token_refused_for_its_role_says_which_token_and_role(app, operator):
    viewer = make(operator, name="reader", role="viewer").get_json()["token"]
    script = app.test_client()
    message = error(script.post("/api/runs/1/cancel", headers=bearer(viewer)), 403, "forbidden")
    assert "needs the operator role" in message and "olga's token 'reader' has the viewer role" in message
    # A demoted user's token acts with the user's role now, whatever it was made with.
    operator_token = make(operator, name="ops").get_json()["token"]
    with app.app_context(), db.engine.connect() as conn:
        set_role(conn, "olga", "viewer", Actor(label="test"))
    message = error(script.post("/api/runs/1/cancel", headers=bearer(operator_token)), 403, "forbidden")
    assert "has the viewer role" in message
