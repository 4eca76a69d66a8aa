"""Records nested at any depth (SPEC §1–§4): each is handled alone, loaded if valid, a dead letter if not,
and the rest of the file loads; a reprocess of one never fails its run."""

import json

import pytest

from app.pipeline import jsontext, parse_edit, reprocess, run_file

from .pipeline_helpers import fetch, rec, target


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of arrays and objects nested `depth` levels deep."""
    opening = "".join('{"a":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return opening + leaf + closing


def record_text(key: str, field: str, depth: int) -> str:
    """A compact record whose `field` holds a value `depth` levels deep (a new field, or one of the shape)."""
    base = {"key": key, "name": "n", "value": 1, "ts": "2025-01-15T12:00:00"}
    base[field] = "DEEP"
    return json.dumps(base, separators=(",", ":")).replace('"DEEP"', nested(depth))


DEPTHS = [300, 600, 10_000]  # past orjson's 255, past the stdlib's fallback serialiser, far past both


def file_records(depth: int) -> list[str]:
    return [
        json.dumps(rec(key="first"), separators=(",", ":")),
        record_text("extra", "extra", depth),  # deep inside a field the shape ignores: valid
        record_text("deep-name", "name", depth),  # deep where a string must be: invalid_name
        nested(depth),  # not an object at all
        json.dumps(rec(key="last"), separators=(",", ":")),
    ]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("jsonl", [False, True], ids=["document", "jsonl"])
def test_a_deep_record_is_handled_alone_and_the_rest_loads(conn, write, depth, jsonl):
    texts = file_records(depth)
    content = "\n".join(texts) + "\n" if jsonl else "[\n" + ",\n".join(texts) + "\n]"
    summary = run_file(conn, write("deep.data", content))
    assert (summary["status"], summary["input_records"], summary["inserted"], summary["rejected"]) == (
        "succeeded", 5, 3, 2)
    assert set(target(conn)) == {"first", "extra", "last"}
    letters = fetch(conn, "SELECT pos, key, error, raw FROM dead_letters ORDER BY pos")
    assert [(r.pos, r.key, r.error) for r in letters] == [(3, "deep-name", "invalid_name"),
                                                          (4, None, "not_an_object")]
    assert [r.raw for r in letters] == [texts[2], texts[3]]  # kept as received, keys in their order


@pytest.mark.parametrize("depth", [600, 10_000])
def test_reprocess_of_a_deep_record_valid_or_not_runs(conn, write, depth):
    run_file(conn, write("deep.json", "[" + record_text("deep-name", "name", depth) + "]"))
    ((dl_id,),) = fetch(conn, "SELECT id FROM dead_letters")
    again = reprocess(conn, [dl_id])  # unchanged: rejected again, the dead letter stays open
    assert (again["status"], again["rejected"]) == ("succeeded", 1)
    letter = fetch(conn, "SELECT status, error, attempts, last_raw FROM dead_letters")[0]
    assert (letter.status, letter.error, letter.attempts) == ("open", "invalid_name", 1)
    assert letter.last_raw == record_text("deep-name", "name", depth)
    # An operator's edit, as the page sends it (text), still deep, now in an ignored field: it loads.
    edited = parse_edit(record_text("deep-name", "extra", depth))
    fixed = reprocess(conn, [dl_id], edited=edited)
    assert (fixed["status"], fixed["inserted"]) == ("succeeded", 1)
    assert fetch(conn, "SELECT status FROM dead_letters") == [("resolved",)]
    assert set(target(conn)) == {"deep-name"}


def test_an_edit_of_a_deep_value_that_is_not_an_object_is_a_dead_letter_again(conn, write):
    run_file(conn, write("bad.json", json.dumps([rec(key="")])))
    ((dl_id,),) = fetch(conn, "SELECT id FROM dead_letters")
    summary = reprocess(conn, [dl_id], edited=parse_edit(nested(10_000)))
    assert (summary["status"], summary["rejected"]) == ("succeeded", 1)
    assert fetch(conn, "SELECT error, last_raw FROM dead_letters") == [("not_an_object", nested(10_000))]


def test_json_text_round_trips_at_any_depth_with_the_raw_rules():
    text = nested(20_000, '["\\u0000", "\\ud800", 1e400, -1e400, 12345678901234567890123, {"b": 1, "a": 2}]')
    value = jsontext.loads(text)
    assert jsontext.dumps(value) == nested(
        20_000, '["\\u0000","\\ud800",1e999,-1e999,12345678901234567890123,{"b":1,"a":2}]')
    with pytest.raises(ValueError, match="NaN is not JSON"):
        jsontext.loads(nested(5_000, "NaN"))
    with pytest.raises(ValueError, match="Expecting ',' delimiter"):
        jsontext.loads(nested(5_000)[:-1])


def test_pages_and_api_show_and_retry_a_deep_dead_letter(client, app, tmp_path):
    from app.extensions import db
    from app.runs import current_service

    path = tmp_path / "deep.json"
    path.write_text("[" + record_text("deep-name", "name", 10_000) + "]")
    with app.app_context():
        current_service().run_file(path)
        (dl_id,) = (r.id for r in db.session.execute(db.text("SELECT id FROM dead_letters")))
    assert client.get(f"/dead-letters/{dl_id}").status_code == 200  # too deep to indent: shown as it is
    assert client.get(f"/api/dead-letters/{dl_id}").status_code == 200
    # The edited record as an object in the JSON body, nested 10,000 levels inside a field the shape ignores.
    body = '{"raw": ' + record_text("deep-name", "extra", 10_000) + "}"
    response = client.post(f"/api/dead-letters/{dl_id}/reprocess", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["dead_letter"]["status"] == "resolved"
