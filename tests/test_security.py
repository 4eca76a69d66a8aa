"""Trusted host names, the session cookie, security headers and CSP, the server's name, and a broken DATABASE_URL."""
import http.client
import threading
from html.parser import HTMLParser

import pytest
from werkzeug.serving import make_server

from app.web.auth import public

from .test_pages_helpers import text, token

# --- trusted host names ------------------------------------------------------------------------------

def test_the_test_client_asks_for_localhost(client):
    assert client.get("/").request.host == "localhost"


# The sign-in page is open to anyone: the host check comes before it, and the test client keeps a signed-in
# session's cookie for localhost only.
@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:8000", "[::1]",
                                  "[::1]:5000"])
def test_the_loopback_names_are_served_on_any_port(anon_client, host):
    assert anon_client.get("/sign-in", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "localhost.evil.example", "127.0.0.2",
                                  "[::2]:5000", "[::1", "localhost:99999", "LOCALHOST", ""])
def test_any_other_host_gets_a_400_naming_the_setting(client, host):
    response = client.get("/runs", headers={"Host": host})
    assert response.status_code == 400
    assert "this host name is not trusted; add it to SLUICE_TRUSTED_HOSTS" in text(response)


def test_an_untrusted_host_gets_json_under_the_api(client):
    response = client.get("/api/runs", headers={"Host": "evil.example:5000"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "untrusted_host"
    assert "add it to SLUICE_TRUSTED_HOSTS" in response.json["error"]["message"]


def test_dns_rebinding_cannot_discard_a_dead_letter(loaded, client, engine):
    # A page of evil.example whose name now resolves to 127.0.0.1 posts to its own origin.
    response = client.post("/api/dead-letters/1/discard", json={"reason": "rebound"},
                           headers={"Host": "evil.example:5000", "Origin": "http://evil.example:5000"})
    assert response.status_code == 400
    assert client.get("/api/dead-letters/1").json["status"] == "open"


def test_the_health_check_answers_a_load_balancer_that_names_the_address(client):
    assert client.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_trusted_hosts_come_from_the_environment(db_url, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("SLUICE_TRUSTED_HOSTS", " sluice.example.com:443, .internal.example ,::1")
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": "t",
                      "SLUICE_EMBEDDED_WORKER": False})
    client = app.test_client()
    for host, status in [("sluice.example.com", 200), ("sluice.example.com:8443", 200),
                         ("a.internal.example", 200), ("internal.example", 200), ("[::1]:5000", 200),
                         ("localhost", 400), ("127.0.0.1:5000", 400), ("evil.sluice.example.com", 400)]:
        assert client.get("/sign-in", headers={"Host": host}).status_code == status, host


# --- the session cookie ------------------------------------------------------------------------------

def _session_cookie(client) -> str:
    token(client, "/")  # a page with a form puts the CSRF secret in the session
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie


def test_the_session_cookie_is_lax_and_http_only(client):
    response = client.get("/")
    header = response.headers["Set-Cookie"]
    assert "SameSite=Lax" in header and "HttpOnly" in header and "Secure" not in header
    assert _session_cookie(client)


def test_the_session_cookie_is_secure_when_served_over_https(db_url, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("SLUICE_SESSION_COOKIE_SECURE", "1")
    monkeypatch.setenv("SLUICE_SESSION_COOKIE_SAMESITE", "strict")
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": db_url, "SECRET_KEY": "t",
                      "SLUICE_EMBEDDED_WORKER": False})
    # The sign-in page keeps its form's CSRF secret in the session of an anonymous visitor.
    header = app.test_client().get("/sign-in", base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" in header and "SameSite=Strict" in header and "HttpOnly" in header


# --- security headers and the content security policy --------------------------------------------------

def _policy(response) -> dict:
    directives = [d.strip().split() for d in response.headers["Content-Security-Policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


@pytest.mark.parametrize("path", ["/", "/runs", "/target", "/dead-letters", "/watermarks", "/lineage/evt-001",
                                  "/no-such-page", "/runs/999", "/api/runs", "/api/runs/999",
                                  "/api/openapi.json", "/static/sluice.css", "/healthz", "/target/export.csv"])
def test_every_response_carries_the_security_headers(loaded, client, path):
    response = client.get(path)
    policy = _policy(response)
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_errors_carry_them_too(client):
    assert "frame-ancestors 'none'" in client.get("/", headers={"Host": "evil.example"}).headers[
        "Content-Security-Policy"]
    assert client.post("/runs/1/cancel").headers["X-Content-Type-Options"] == "nosniff"  # CSRF refusal


def test_an_unexpected_error_carries_them(app, client):
    def boom():
        raise RuntimeError("boom")

    app.add_url_rule("/boom", "boom", public(boom))
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as when not testing: the 500 page, not the exception
    response = client.get("/boom")
    assert response.status_code == 500
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


class _Inline(HTMLParser):
    """Collect what a `default-src 'self'` policy without 'unsafe-inline' would block."""

    def __init__(self):
        super().__init__()
        self.found = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs:
            self._in_script = True
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs.items():
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("inline <script>")


def test_no_page_needs_inline_script_or_style(loaded, client):
    pages = ["/", "/runs", "/runs/1", "/target", "/target?sort=value&desc=1", "/dead-letters",
             "/dead-letters?status=all", "/dead-letters/1", "/dead-letters/bulk?action=discard", "/watermarks",
             "/watermarks/confirm?value=2025-01-01T00:00:00Z", "/watermarks/confirm?reset=1", "/lineage/evt-001",
             "/lineage/never-seen", "/no-such-page"]
    for path in pages:
        response = client.get(path)
        parser = _Inline()
        parser.feed(text(response))
        assert parser.found == [], (path, parser.found)
    assert "<svg" in text(client.get("/runs"))  # the chart is still drawn on the server, inline


# --- the server does not name its versions -----------------------------------------------------------

def test_the_development_server_does_not_name_its_versions(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        servers = response.headers.get_all("Server")
        conn.close()
    finally:
        server.shutdown()
        thread.join(10)
    assert servers == ["Sluice"]


# --- a DATABASE_URL with a typo ------------------------------------------------------------------------

BROKEN_URLS = ["postgresql://u:secret@host:notaport/db", "postgresql://u:secret@[bad/db",
               "postgresql://u:hunter2@secret@127.0.0.1:1/db", "sqlite://u:secret@host/x.db"]


@pytest.fixture(params=BROKEN_URLS, ids=["port-not-a-number", "unclosed-bracket", "unescaped-at", "sqlite-host"])
def broken(request, tmp_path, monkeypatch):
    from app import create_app

    monkeypatch.setenv("SLUICE_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("DATABASE_URL", request.param)
    return create_app({"TESTING": True, "SECRET_KEY": "t", "SLUICE_EMBEDDED_WORKER": False})


def _one_line_without_the_password(message: str) -> None:
    assert message and "\n" not in message.strip()
    assert "secret" not in message and "hunter2" not in message


def test_a_broken_database_url_starts_and_answers_503_in_one_line(broken):
    client = broken.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503
    _one_line_without_the_password(health.json["database"])
    for path in ("/", "/runs", "/api/runs"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "secret" not in text(response) and "hunter2" not in text(response)
    page = text(client.get("/"))
    assert "Sluice cannot use its database" in page


def test_the_cli_says_so_in_one_line_without_the_password(broken):
    result = broken.test_cli_runner().invoke(args=["etl", "runs"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    _one_line_without_the_password(result.output)
    assert result.output.startswith("Error: the database is unreachable")
