"""Who may open what (SPEC §11): every route of the app × every kind of caller, from the app's own url_map.

The role each endpoint needs is written here, not read from the views' decorators, so a wrong decorator
fails this test, and so does a route that nobody put in the table. Callers: nobody, a session of each
role, an API token of each role, an expired and a revoked token, and a disabled user's session and
token. Expected: without valid credentials a page redirects to the sign-in page (and back) and the API
and the pages' JSON polls answer 401 JSON with `WWW-Authenticate`; a role too low answers 403; otherwise
the guard lets the request through (reads of the sample's rows answer 200).
"""
import fnmatch
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import update

from app.accounts.actor import Actor
from app.accounts.roles import ADMIN, OPERATOR, VIEWER, at_least
from app.accounts.tokens import create_token, revoke_token
from app.accounts.users import create_user, set_disabled
from app.extensions import db
from app.models import ApiToken
from app.pipeline.validate import utc_now
from app.web.auth import PUBLIC

from .conftest import sign_in_as
from .test_pages_helpers import token

# The role of every endpoint Sluice serves. A new route must be added here (the test fails until it is).
ROLES = {
    "health.healthz": PUBLIC, "static": PUBLIC, "api-docs.openapi_json": PUBLIC,
    "account.sign_in": PUBLIC, "account.sign_in_post": PUBLIC, "account.sign_out": VIEWER,
    "home.index": VIEWER, "upload.upload": OPERATOR,
    "runs.index": VIEWER, "runs.show": VIEWER, "runs.progress": VIEWER, "runs.status": VIEWER,
    "runs.summary": VIEWER, "runs.cancel": OPERATOR, "runs.retry": OPERATOR, "runs.backfill": OPERATOR,
    "target.index": VIEWER, "target.export": VIEWER, "lineage.jump": VIEWER, "lineage.show": VIEWER,
    "dead_letters.index": VIEWER, "dead_letters.show": VIEWER, "dead_letters.export": VIEWER,
    "dead_letters.bulk_confirm": OPERATOR, "dead_letters.bulk": OPERATOR, "dead_letters.edit": OPERATOR,
    "dead_letters.reprocess_one": OPERATOR, "dead_letters.discard_one": OPERATOR,
    "dead_letters.reopen_one": OPERATOR,
    "watermarks.index": VIEWER, "watermarks.confirm": OPERATOR, "watermarks.set_value": OPERATOR,
    "watermarks.reset": OPERATOR,
    "datasets.index": VIEWER, "datasets.show": VIEWER, "datasets.new": ADMIN, "datasets.propose": ADMIN,
    "datasets.create": ADMIN, "datasets.evolve": ADMIN, "datasets.archive_confirm": ADMIN,
    "datasets.archive": ADMIN,
    "api.list_runs": VIEWER, "api.get_run": VIEWER, "api.create_run": OPERATOR, "api.cancel_run": OPERATOR,
    "api.retry_run": OPERATOR, "api.backfill_run": OPERATOR,
    "api.list_target": VIEWER, "api.lineage": VIEWER,
    "api.list_dead_letters": VIEWER, "api.get_dead_letter": VIEWER, "api.reprocess_dead_letter": OPERATOR,
    "api.discard_dead_letter": OPERATOR, "api.reopen_dead_letter": OPERATOR, "api.bulk_reprocess": OPERATOR,
    "api.bulk_discard": OPERATOR, "api.bulk_reopen": OPERATOR,
    "api.list_watermarks": VIEWER, "api.get_watermark": VIEWER, "api.preview_watermark": VIEWER,
    "api.set_watermark": OPERATOR, "api.reset_watermark": OPERATOR,
    "api.list_datasets": VIEWER, "api.get_dataset": VIEWER, "api.shape_schema": VIEWER,
    "api.create_dataset_view": ADMIN, "api.change_dataset": ADMIN, "api.archive_dataset_view": ADMIN,
    "api.propose_dataset": ADMIN,
}
# The areas of issue 10 whose endpoints' names their authors choose: one role for each pattern (the first
# that matches). The first administrator's setup link works before anyone can sign in.
PATTERNS = [
    ("account.setup*", PUBLIC), ("account.*", VIEWER), ("users.*", ADMIN), ("audit.*", ADMIN),
    ("api.*audit*", ADMIN), ("api.*token*", VIEWER),
]
JSON_POLLS = {"runs.progress", "runs.status"}  # polled by scripts: 401 JSON, not a redirect
# The sample's rows (the `loaded` fixture): reads of them answer 200.
ARGUMENTS = {"run_id": 1, "dl_id": 1, "key": "evt-001", "fmt": "csv", "filename": "sluice.css", "name": "events"}
WATERMARK = "events_ts"  # the `name` of /api/watermarks/<name>
QUERIES = {"api.preview_watermark": "value=2025-01-01T00:00:00Z",
           "watermarks.confirm": "value=2025-01-01T00:00:00Z", "dead_letters.bulk_confirm": "action=discard",
           "lineage.jump": "key=evt-001"}
REDIRECTS = {"lineage.jump", "account.sign_in"}  # reads that answer with a redirect (not to the sign-in page)

# Callers: (name, role it acts with, or None when it must be refused as not signed in).
CALLERS = [("anonymous", None), ("viewer session", VIEWER), ("operator session", OPERATOR),
           ("admin session", ADMIN), ("viewer token", VIEWER), ("operator token", OPERATOR),
           ("admin token", ADMIN), ("expired token", None), ("revoked token", None),
           ("disabled user's session", None), ("disabled user's token", None)]


def required(endpoint: str) -> str | None:
    """The role this table says an endpoint needs; None when the table does not know it."""
    if endpoint in ROLES:
        return ROLES[endpoint]
    return next((role for pattern, role in PATTERNS if fnmatch.fnmatchcase(endpoint, pattern)), None)


def _path(rule) -> tuple[str, bool]:
    """A URL of the rule, and whether it names the sample's rows: the account areas' ids and names are made up
    (no such user or token: their routes answer 404 past the guard, and nobody's token is revoked)."""
    values, real = {}, True
    for argument in rule.arguments:
        if argument == "name" and "watermark" in rule.endpoint:
            values[argument] = WATERMARK
        elif rule.endpoint in ROLES or argument == "fmt":
            values[argument] = ARGUMENTS[argument]
        else:
            values[argument], real = 999999 if f"<int:{argument}>" in rule.rule else "nobody", False
    path = rule.build(values, append_unknown=False)[1]
    query = QUERIES.get(rule.endpoint)
    return (f"{path}?{query}" if query else path), real


def requests_of(app):
    """(endpoint, method, path, names real rows) of every route: reads first, signing out last (it ends the
    session)."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, *_path(rule)))
    return sorted(found, key=lambda r: (r[0] == "account.sign_out", r[1] != "GET", r[0], r[1]))


def _expired(engine, token_id: int) -> None:
    past = (utc_now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    with engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(expires_at=past))


@pytest.fixture
def callers(loaded, password_hash):
    """Every caller's test client, by name: cookies of a session, or an Authorization header."""
    app = loaded
    actor = Actor(label="test")
    clients = {}
    with app.app_context(), db.engine.connect() as conn:
        users = {role: create_user(conn, role, role, actor, password_hash=password_hash)
                 for role in (VIEWER, OPERATOR, ADMIN)}
        secrets = {role: create_token(conn, users[role], "script", actor)[0] for role in users}
        expired, row = create_token(conn, users[ADMIN], "expired", actor, expires_days=1)
        _expired(db.engine, row.id)
        revoked, row = create_token(conn, users[ADMIN], "revoked", actor)
        revoke_token(conn, row.id, actor)
        former = create_user(conn, "former", ADMIN, actor, password_hash=password_hash)
        former_secret = create_token(conn, former, "script", actor)[0]
        set_disabled(conn, "former", True, actor)  # `former` (its session id) is the row from before
    sessions = {"viewer session": users[VIEWER], "operator session": users[OPERATOR],
                "admin session": users[ADMIN], "disabled user's session": former}
    bearers = {"viewer token": secrets[VIEWER], "operator token": secrets[OPERATOR],
               "admin token": secrets[ADMIN], "expired token": expired, "revoked token": revoked,
               "disabled user's token": former_secret}
    for name, _ in CALLERS:
        client = app.test_client()
        client.csrf = token(client, "/sign-in")  # forms carry a valid token: the guard answers, not CSRF
        if name in sessions:
            sign_in_as(client, sessions[name])
        client.headers = {"Authorization": f"Bearer {bearers[name]}"} if name in bearers else {}
        clients[name] = client
    return clients


def _answer(client, endpoint: str, method: str, path: str):
    form = {} if endpoint.startswith("api.") else {"data": {"csrf_token": client.csrf}}
    if method == "GET":
        form = {}
    return client.open(path, method=method, headers=client.headers, **form)


def _verdict(endpoint: str, method: str, path: str, real: bool, role: str | None, response) -> str | None:
    """What is wrong with the answer to this caller, or None."""
    needed = required(endpoint)
    if needed is None:
        return "not in the access table"
    status, location = response.status_code, response.headers.get("Location", "")
    to_sign_in = status == 302 and location.startswith("/sign-in?next=")  # signing out goes to /sign-in
    allowed = needed == PUBLIC or (role is not None and at_least(role, needed))
    if allowed:
        if status in (401, 403) or to_sign_in or status >= 500:
            return f"refused or failed: {status} {location}"
        if method == "GET" and real and status not in ((200, 302) if endpoint in REDIRECTS else (200,)):
            return f"a read answered {status}, not 200"
        return None
    if role is not None:
        return None if status == 403 else f"{status}, not 403 (needs {needed})"
    if endpoint.startswith("api.") or endpoint in JSON_POLLS:
        if status != 401 or response.json["error"]["code"] != "unauthorized" or \
                not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
            return f"{status} {response.headers.get('WWW-Authenticate')}, not 401 JSON with WWW-Authenticate"
        return None
    target = urlsplit(location)
    back = [path] if method == "GET" else None  # a post comes back to the page it came from (no Referer here)
    if status != 302 or target.path != "/sign-in" or parse_qs(target.query).get("next") != back:
        return f"{status} {location!r}, not a redirect to the sign-in page and back"
    return None


def test_every_route_is_in_the_table(app):
    missing = sorted({rule.endpoint for rule in app.url_map.iter_rules() if required(rule.endpoint) is None})
    assert missing == [], f"routes the access table does not know: {missing}"
    # Every endpoint the table names by name is served: the table is not describing an app of the past.
    assert set(ROLES) <= set(app.view_functions)


@pytest.mark.parametrize("caller, role", CALLERS, ids=[name for name, _ in CALLERS])
def test_every_route_answers_each_caller_as_its_role_allows(loaded, callers, caller, role):
    client = callers[caller]
    wrong = []
    cells = requests_of(loaded)
    for endpoint, method, path, real in cells:
        problem = _verdict(endpoint, method, path, real, role, _answer(client, endpoint, method, path))
        if problem:
            wrong.append(f"{method} {path} ({endpoint}): {problem}")
    assert wrong == [], "\n".join(wrong)
    assert len(cells) >= len(ROLES)


# --- CSRF still holds for a signed-in browser; a script with a token needs none ----------------------------

def test_a_signed_in_form_post_without_its_csrf_token_is_refused(loaded, client):
    response = client.post("/dead-letters/1/discard", data={"reason": "no token"})
    assert response.status_code == 400
    assert client.get("/api/dead-letters/1").json["status"] == "open"


def test_a_bearer_request_needs_no_csrf_token(loaded, callers):
    script = callers["operator token"]
    response = script.post("/api/dead-letters/1/discard", json={"reason": "by script"}, headers=script.headers)
    assert response.status_code == 200 and response.json["status"] == "discarded"


def test_a_cookie_api_request_from_another_origin_is_still_refused(loaded, client):
    response = client.post("/api/dead-letters/1/discard", json={"reason": "rebound"},
                           headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and response.json["error"]["code"] == "cross_site"
    assert client.get("/api/dead-letters/1").json["status"] == "open"


def test_a_form_post_without_a_session_signs_in_and_comes_back_to_its_page(anon_client, loaded):
    csrf = token(anon_client, "/sign-in")
    response = anon_client.post("/runs/1/retry", data={"csrf_token": csrf},
                                headers={"Referer": "http://localhost/runs/1?lineage=x"})
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["next"] == ["/runs/1?lineage=x"]
    # Another site's page is not a place to come back to.
    response = anon_client.post("/runs/1/retry", data={"csrf_token": csrf},
                                headers={"Referer": "http://evil.example/runs/1"})
    assert "next" not in parse_qs(urlsplit(response.headers["Location"]).query)
