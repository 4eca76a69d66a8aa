"""What every request and response passes: trusted host names, security headers, no server versions.

Trusted hosts are checked here rather than by Flask's `TRUSTED_HOSTS`: Werkzeug (3.1) compares each
trusted name cut at its first ":", so an IPv6 literal such as `[::1]` can never match there.
"""
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wsgi import host_is_trusted

from .errors import render_error

# The pages load only their own scripts, styles and images, post only to themselves, and may not be
# framed: no inline script, style attribute or event handler anywhere (the templates hold none).
CONTENT_SECURITY_POLICY = ("default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Other sites cannot load a page or an export as a script or an image either.
    "Cross-Origin-Resource-Policy": "same-origin",
}
SERVER = "Sluice"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(host: str) -> str:
    """The name part of a `host[:port]`: `example.com`, `127.0.0.1`, `[::1]`."""
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.partition(":")[0]


def is_trusted_host(host: str, trusted: list[str]) -> bool:
    """Whether a request's `host[:port]` is well formed and names one of `trusted` (any port)."""
    if not host_is_trusted(host):  # no trusted list: only the characters and the port are checked
        return False
    if host.startswith("["):
        return host_name(host) in trusted
    names = [name for name in trusted if not name.startswith("[")]
    return bool(names) and host_is_trusted(host, names)


def _check_request():
    """Refuse a request for a host name this app does not serve, and a form post Flask-WTF cannot check."""
    # A health check may come from a load balancer that names the machine by its address.
    if request.endpoint != "health.healthz" and not is_trusted_host(request.host,
                                                                    current_app.config["SLUICE_TRUSTED_HOSTS"]):
        name = host_name(request.host)
        asked = f"Sluice was asked for the host {name[:100]!r}" if name else "The request names no valid host"
        return render_error(400, "Host not trusted", f"{asked}: this host name is not trusted; add it to "
                            "SLUICE_TRUSTED_HOSTS (comma-separated names) if it should be served.",
                            code="untrusted_host")
    # Over HTTPS, Flask-WTF parses the Referer of a form post with urlparse, which raises on a malformed one.
    if request.is_secure and request.method in UNSAFE_METHODS and not request.path.startswith("/api/") \
            and request.referrer:
        try:
            port = urlsplit(request.referrer).port  # the port is parsed only when asked for
        except ValueError:
            port = -1
        if port == -1:
            return render_error(400, "Form refused", "The request's Referer header is not a URL. Go back, reload "
                                "the page and submit again.")
    return None


def _add_headers(response):
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _server_version(handler) -> str:
    return SERVER


def init_app(app: Flask) -> None:
    """Check every request's host before anything else, and add the security headers to every response."""
    app.before_request_funcs.setdefault(None, []).insert(0, _check_request)
    app.after_request(_add_headers)
    # The development server (`flask run`) would send `Server: Werkzeug/x Python/y`, and a header set by
    # the app only adds a second one: its handler's version_string is the hook http.server offers.
    # gunicorn sends `Server: gunicorn` with no version.
    WSGIRequestHandler.version_string = _server_version
