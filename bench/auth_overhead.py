"""What signing in costs: a request with a session or a token against the same read with no check at all.

    python bench/auth_overhead.py [--requests N] [--database-url URL]

Through Flask's test client (no network), on a fresh SQLite file (or the given PostgreSQL database,
which must be empty), with the seed's sample loaded: `GET /api/runs?limit=1` answered as

- `none`: the view alone, its role check switched off (the cost of the read itself);
- `session`: a signed-in browser's cookie (one read of the user per request);
- `token`: `Authorization: Bearer sluice_…` (one read of the token and one of its user);

and the Argon2id hash and check of one password, which a sign-in pays once. The variants take turns
request by request, so that a busy machine slows all alike; the medians are reported.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant (default 2000)")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a fresh SQLite file)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sluice-auth-bench-"))
    os.environ["SLUICE_INSTANCE_PATH"] = str(folder / "instance")
    from app import create_app
    from app.accounts import passwords
    from app.accounts.actor import Actor
    from app.accounts.tokens import create_token
    from app.accounts.users import create_user
    from app.extensions import db
    from app.pipeline import run_file

    url = args.database_url or f"sqlite:///{folder / 'sluice.db'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SLUICE_EMBEDDED_WORKER": False, "TESTING": True})
    with app.app_context(), db.engine.connect() as conn:
        run_file(conn, ROOT / "tests" / "data" / "sample_input.json")
        user = create_user(conn, "bench", "admin", Actor(label="bench"), password="a bench password")
        secret, _ = create_token(conn, user, "bench", Actor(label="bench"))

    session, token, none = app.test_client(), app.test_client(), app.test_client()
    with session.session_transaction() as s:
        s["_user_id"] = user.session_id()
    view = app.view_functions["api.list_runs"]
    path = "/api/runs?limit=1"

    def timed(client, headers=None) -> float:
        start = time.perf_counter()
        response = client.get(path, headers=headers or {})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.status_code
        return elapsed

    times = {"none": [], "session": [], "token": []}
    bearer = {"Authorization": f"Bearer {secret}"}
    for _ in range(args.requests):
        view.sluice_role = "public"
        times["none"].append(timed(none))
        view.sluice_role = "viewer"
        times["session"].append(timed(session))
        times["token"].append(timed(token, bearer))

    start = time.perf_counter()
    stored = passwords.hash_password("a bench password")
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    assert passwords.verify(stored, "a bench password")
    verified = time.perf_counter() - start

    base = statistics.median(times["none"])
    print(f"{url.split(':')[0]}: {args.requests} requests per variant of GET {path}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:8} median {median * 1000:6.2f} ms  (+{(median - base) * 1000:5.2f} ms)")
    print(f"  Argon2id: hash {hashed * 1000:.0f} ms, verify {verified * 1000:.0f} ms (once per sign-in)")


if __name__ == "__main__":
    main()
