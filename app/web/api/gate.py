"""The API's one gate: every request passes here before its view.

The API is exempt from the dashboard's CSRF tokens, so the gate refuses every state-changing request that
a browser marks as coming from another site (`Sec-Fetch-Site`, any case) or from another origin (`Origin`
compared with this request's own by scheme, host and port, case-insensitively; a malformed or opaque
`null` origin is foreign). Scripts (curl, requests) send neither header and pass. Cross-site reads are left
to the browser's same-origin policy: no CORS header is ever sent. Who may call what is checked before
this, for every route alike (`app/web/auth.py`); a request with a bearer token passes the gate as a
script does (a cross-site page cannot send an `Authorization` header without a CORS preflight).
"""
from urllib.parse import urlsplit

from flask import request

from .blueprint import ApiError, bp

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as `https://Host:8443`, lowercased; None when malformed."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:  # `http://[`, `http://[::1`, a port that is not a number or out of range
        return None
    if scheme not in DEFAULT_PORTS or not host or parts.path not in ("", "/") or parts.query or parts.fragment \
            or parts.username is not None:
        return None
    return scheme, host.lower(), port if port is not None else DEFAULT_PORTS[scheme]


@bp.before_request
def gate():
    """Refuse a state-changing request that a browser sent from another site's page (403)."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    origin = request.headers.get("Origin")
    foreign = origin is not None and (origin_of(origin) is None
                                      or origin_of(origin) != origin_of(f"{request.scheme}://{request.host}"))
    if site in ("cross-site", "same-site") or foreign:
        raise ApiError(403, "cross_site",
                       "requests from another site's pages cannot change data through the API")
