"""The pages hide what the signed-in role cannot do (the server refuses it anyway), and show who did what."""
import io

import pytest
from sqlalchemy import update

from app.models import DeadLetter, Run

from .conftest import sign_in_as
from .test_pages_helpers import text

# What each action looks like on its page: (page, what the page holds when the action is offered).
OPERATOR_ACTIONS = [
    ("/", 'action="/upload"'),
    ("/runs/2", 'action="/runs/2/cancel"'),
    ("/dead-letters", 'action="/dead-letters/1/reprocess"'),
    ("/dead-letters", 'name="action" value="discard"'),  # the selection's bulk buttons
    ("/dead-letters/1", 'action="/dead-letters/1/edit"'),
    ("/dead-letters/1", 'action="/dead-letters/1/discard"'),
    ("/dead-letters/2", 'action="/dead-letters/2/reopen"'),
    ("/watermarks", 'action="/watermarks/confirm"'),
    ("/datasets/events", "Upload a file to it…"),
]
ADMIN_ACTIONS = [
    ("/datasets", 'href="/datasets/new"'),
    ("/datasets/events", 'action="/datasets/events"'),  # change its shape
]


@pytest.fixture
def pages(loaded, make_user, engine):
    """The sample, a queued run 2 (no worker here) and a discarded dead letter 2; a client per role."""
    svc = loaded.extensions["sluice_runs"]
    assert svc.submit(io.BytesIO(b'{"key": "k", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00Z"}'),
                      "queued.json") == 2
    with engine.begin() as conn:
        conn.execute(update(DeadLetter).where(DeadLetter.id == 2).values(status="discarded"))
    clients = {}
    for role in ("viewer", "operator", "admin"):
        clients[role] = loaded.test_client()
        sign_in_as(clients[role], make_user(role, role))
    return clients


def offered(client, actions) -> list[str]:
    """The actions of `actions` that the client's pages offer."""
    found = []
    for page, marker in actions:
        response = client.get(page)
        assert response.status_code == 200, page
        if marker in text(response):
            found.append(f"{page} {marker}")
    return found


def test_a_viewer_is_offered_no_action(pages):
    assert offered(pages["viewer"], OPERATOR_ACTIONS + ADMIN_ACTIONS) == []
    assert "Uploading files needs the operator role" in text(pages["viewer"].get("/"))


def test_an_operator_is_offered_every_action_but_the_datasets(pages):
    assert len(offered(pages["operator"], OPERATOR_ACTIONS)) == len(OPERATOR_ACTIONS)
    assert offered(pages["operator"], ADMIN_ACTIONS) == []


def test_an_administrator_is_offered_everything(pages):
    everything = OPERATOR_ACTIONS + ADMIN_ACTIONS
    assert len(offered(pages["admin"], everything)) == len(everything)


# --- who ------------------------------------------------------------------------------------------------

def test_runs_and_dead_letters_say_who(pages, engine):
    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == 1).values(created_by="alice (token <deploy>)",
                                                           cancelled_by="bob"))
        conn.execute(update(Run).where(Run.id == 2).values(kind="retry", created_by="carol"))
        conn.execute(update(DeadLetter).where(DeadLetter.id == 1).values(updated_by="dave"))
    viewer = pages["viewer"]
    run = text(viewer.get("/runs/1"))
    assert "uploaded by alice (token &lt;deploy&gt;); cancelled by bob" in run  # escaped, as every value
    assert "retried by carol" in text(viewer.get("/runs/2"))
    runs = text(viewer.get("/runs"))
    assert "alice (token &lt;deploy&gt;)" in runs and "cancelled by bob" in runs
    assert "by <span id=\"updated-by\">dave</span>" in text(viewer.get("/dead-letters/1"))
    assert ">dave<" in text(viewer.get("/dead-letters?status=all"))
