"""Who is asking, and whether they may: sessions (Flask-Login), bearer tokens, and each route's role.

Every view declares the role it needs with `@requires(ROLE)` (or `@public`); `check_every_route` refuses
to start an app with a view that declares none, so a new route cannot be left open by forgetting.
A request without a valid session or token is sent to the sign-in page (pages) or answered 401 (the
API and the pages' JSON polls); one whose role is too low is answered 403.
"""
from urllib.parse import urlsplit

from flask import Flask, current_app, g, jsonify, redirect, request, url_for
from flask_login import UserMixin, current_user

from ..accounts.actor import Actor
from ..accounts.roles import ADMIN, OPERATOR, VIEWER, at_least
from ..accounts.tokens import TokenRow, authenticate_token
from ..accounts.users import UserRow, load_session_user
from ..extensions import db, login_manager
from .errors import render_error

PUBLIC = "public"
__all__ = ["ADMIN", "OPERATOR", "PUBLIC", "VIEWER", "Principal", "current_actor", "public", "requires"]
# Endpoints Sluice does not define itself: the static files (the sign-in page needs its styles) and
# the OpenAPI document (a description of the API, no data) are open.
PUBLIC_ENDPOINTS = frozenset({"static", "api-docs.openapi_json"})
# Polled by the pages' scripts: a 401 in JSON, not a redirect to a page they cannot show.
JSON_ENDPOINTS = frozenset({"runs.progress", "runs.status"})


def requires(role: str):
    """Declare the role a view needs: viewer, operator, admin, or PUBLIC (anyone, signed in or not)."""
    def decorator(view):
        view.sluice_role = role
        return view
    return decorator


public = requires(PUBLIC)


class Principal(UserMixin):
    """The signed-in user, or a user acting through one of their tokens (then with the token's role)."""

    def __init__(self, user: UserRow, token: TokenRow | None = None):
        self.user, self.token = user, token
        self.id, self.name = user.id, user.name
        # A token acts with its own role, never above its user's as the user is now.
        self.role = user.role if token is None or not at_least(user.role, token.role) else token.role

    def get_id(self) -> str:
        return self.user.session_id()

    @property
    def is_active(self) -> bool:
        return self.user.active

    def can(self, role: str) -> bool:
        """Whether this principal's role includes `role`."""
        return at_least(self.role, role)


def _bearer() -> str | None:
    """The token of an `Authorization: Bearer …` header, or None when there is no such header."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


@login_manager.user_loader
def _load_session(session_id: str) -> Principal | None:
    if "Authorization" in request.headers:  # a request that names its credentials uses those alone
        return None
    with db.engine.connect() as conn:
        user = load_session_user(conn, session_id)
    return Principal(user) if user is not None else None


@login_manager.request_loader
def _load_bearer(req) -> Principal | None:
    secret = _bearer()
    if not secret:
        return None
    with db.engine.connect() as conn:
        found = authenticate_token(conn, secret)
    if found is None:
        g.bad_token = True  # the 401 says the token is not valid rather than that none was sent
        return None
    token, user = found
    return Principal(user, token)


def required_role(endpoint: str | None) -> str | None:
    """The role an endpoint's view declares (PUBLIC for the static files and the OpenAPI document)."""
    if endpoint in PUBLIC_ENDPOINTS:
        return PUBLIC
    view = current_app.view_functions.get(endpoint)
    return getattr(view, "sluice_role", None)


def safe_next(target: str | None) -> str | None:
    """`target` when it is a path of this site (`/runs?x=1`), else None: never another host or scheme."""
    if not target or not isinstance(target, str) or len(target) > 2000:
        return None
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(ord(c) < 32 for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _wants_json() -> bool:
    return request.blueprint == "api" or request.path.startswith("/api/") or request.endpoint in JSON_ENDPOINTS


def _unauthenticated():
    if _wants_json():
        message = ("the API token is not valid: it is unknown, revoked or expired, or its user is disabled"
                   if g.get("bad_token") else
                   "sign in, or send an API token: Authorization: Bearer <token>")
        response = jsonify({"error": {"code": "unauthorized", "message": message}})
        response.headers["WWW-Authenticate"] = 'Bearer realm="sluice"'
        return response, 401
    # Back to the page after signing in; a form post comes back to the page it was sent from, since
    # its own address may answer only POST.
    target = request.full_path.rstrip("?") if request.method == "GET" else _referring_path()
    return redirect(url_for("account.sign_in", next=safe_next(target)))


def _referring_path() -> str | None:
    """The path (and query) of this site's page that sent the request, from its Referer."""
    if not request.referrer:
        return None
    parts = urlsplit(request.referrer)
    if parts.netloc != request.host:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _forbidden(needed: str):
    token = current_user.token
    who = (f"{current_user.name}'s token {token.name!r} has the {current_user.role} role" if token is not None
           else f"{current_user.name} is signed in as {current_user.role}")
    return render_error(403, "Not allowed", f"This needs the {needed} role; {who}. Ask an administrator if you "
                        "need it.", code="forbidden")


def guard():
    """Let a request through only with a session or token whose role includes the route's."""
    endpoint = request.endpoint
    if endpoint is None:  # no route matched: the 404 or 405 is answered as it is for anyone
        return None
    needed = required_role(endpoint)
    if needed == PUBLIC:
        return None
    if needed is None:  # check_every_route makes this unreachable; refuse rather than serve
        return render_error(403, "Not allowed", "This page declares no role.", code="forbidden")
    if not current_user.is_authenticated:
        return _unauthenticated()
    if not current_user.can(needed):
        return _forbidden(needed)
    return None


def current_actor() -> Actor:
    """Who this request acts as, for the audit log and "who" columns (`anonymous` before sign-in)."""
    address = request.remote_addr
    if not current_user.is_authenticated:
        return Actor(label="anonymous", address=address)
    token = current_user.token
    return Actor.of_user(current_user.id, current_user.name, token_id=token.id if token else None,
                         token_name=token.name if token else None, address=address)


def actor_label() -> str:
    """The label of the current request's actor (what a "who" column shows)."""
    return current_actor().label


def can(role: str) -> bool:
    """For templates: whether the signed-in user's role includes `role` (hides what the server would refuse)."""
    return bool(current_user.is_authenticated and current_user.can(role))


def check_every_route(app: Flask) -> None:
    """Refuse to start when a view declares no role: every route is guarded by its role (SPEC §11)."""
    with app.app_context():
        unguarded = sorted(e for e in app.view_functions if required_role(e) is None)
    if unguarded:
        raise RuntimeError(f"these views declare no role (@requires or @public): {', '.join(unguarded)}")


def _forget_principal() -> None:
    # g lives as long as the app context, which a test (or an outer context) may keep across requests:
    # each request finds its own principal.
    g.pop("_login_user", None)
    g.pop("bad_token", None)
    g.pop("csrf_token", None)  # Flask-WTF's, cached per context: each session has its own


def init_app(app: Flask) -> None:
    """Sessions and tokens on every request, the role check before every view, `can()` in templates."""
    app.before_request_funcs.setdefault(None, []).insert(0, _forget_principal)
    login_manager.init_app(app)
    login_manager.login_view = "account.sign_in"
    app.before_request(guard)
    app.jinja_env.globals["can"] = can
    app.jinja_env.globals.update(VIEWER=VIEWER, OPERATOR=OPERATOR, ADMIN=ADMIN)

