"""The runs list: duration, rate and outcome counts per row, markers, filters (page and API), both charts."""

import html
import json
import re
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import update

from app.datasets.registry import create_dataset
from app.models import Run
from app.pipeline import Options, RunFailed, create_run, run_file

from .conftest import SAMPLE_INPUT
from .test_pages_helpers import records_file, text, token, upload

TODAY = date.today()  # the per-day chart's last day: the UTC date (the tests run in UTC)
COUNTS = ("input_records", "skipped", "rejected", "loaded", "unchanged", "stale", "superseded")


def _run_ids(body: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-run="(\d+)"', body)]


def _row(body: str, run_id: int) -> str:
    return re.search(rf'<tr data-run="{run_id}".*?</tr>', body, re.DOTALL).group(0)


def _live(row: str, field: str) -> str:
    """The text of the element of a row that the live poll fills with `field`."""
    found = re.search(rf'data-live="{field}"[^>]*>(.*?)</(td|span)>', row, re.DOTALL)
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def _count(row: str, field: str) -> int:
    return int(_live(row, field).replace(",", ""))


def _set(conn, run_id: int, **values) -> None:
    with conn.begin():
        conn.execute(update(Run).where(Run.id == run_id).values(**values))


def _on_day(conn, run_id: int, day: date) -> None:
    """Move a run's queued time to noon of `day` (the only way to have runs of other days)."""
    _set(conn, run_id, queued_at=f"{day.isoformat()}T12:00:00.000000")


def _records(n_good: int, n_bad: int = 0, prefix: str = "k") -> list[dict]:
    good = [
        {"key": f"{prefix}-{i}", "name": "n", "value": i, "ts": "2025-06-01T00:00:00Z"} for i in range(n_good)
    ]
    return good + [
        {"key": f"{prefix}-bad-{i}", "name": "n", "value": "abc", "ts": "2025-06-01T00:00:00Z"}
        for i in range(n_bad)
    ]


def _next_link(body: str) -> str | None:
    match = re.search(r'href="([^"]+)" rel="next"', body)
    return html.unescape(match.group(1)) if match else None


# --- rows -----------------------------------------------------------------------------------------------


def test_a_finished_run_shows_its_duration_and_records_per_second(client, conn):
    run_file(conn, SAMPLE_INPUT)  # 7 records
    run_file(conn, SAMPLE_INPUT)
    _set(conn, 1, started_at="2026-01-01T10:00:00.000000", finished_at="2026-01-01T10:00:04.200000")
    _set(conn, 2, started_at="2026-01-01T10:00:00.000000", finished_at="2026-01-01T10:01:05.000000")
    body = text(client.get("/runs"))
    first, second = _row(body, 1), _row(body, 2)
    assert _live(first, "duration") == "4.2 s" and _live(first, "rate") == "1.7"  # 7 records / 4.2 s
    assert _live(second, "duration") == "1 m 05 s" and _live(second, "rate") == "0.1"
    assert "Started 2026-01-01 10:00:00, finished 2026-01-01 10:00:04 UTC" in first


def test_queued_run_has_no_duration_yet(client, conn):
    create_run(conn, kind="cli", source_name="waiting.json")
    row = _row(text(client.get("/runs")), 1)
    assert _live(row, "duration") == "—" and _live(row, "rate") == "—"
    assert 'data-live="status"' in row and 'class="js-status"' in row  # today's live.js keeps working


def test_every_rows_counts_add_up(client, conn, write):
    run_file(conn, SAMPLE_INPUT)  # inserted 5, rejected 2
    run_file(conn, SAMPLE_INPUT)  # skipped 6, unchanged 1
    dup = [
        {"key": "d", "name": "a", "value": 1, "ts": "2026-01-01T00:00:00Z"},
        {"key": "d", "name": "b", "value": 2, "ts": "2026-01-02T00:00:00Z"},
        {"key": "evt-001", "name": "old", "value": 1, "ts": "2024-01-01T00:00:00Z"},
    ]
    run_file(
        conn, records_file(write, "dup.jsonl", dup), options=Options(ignore_watermark=True)
    )  # superseded, stale
    body = text(client.get("/runs"))
    seen = {}
    for run_id in (1, 2, 3):
        row = _row(body, run_id)
        counts = {f: _count(row, f) for f in COUNTS}
        assert counts["input_records"] == sum(v for f, v in counts.items() if f != "input_records"), counts
        seen[run_id] = counts
    assert seen[1] == {
        "input_records": 7,
        "skipped": 0,
        "rejected": 2,
        "loaded": 5,
        "unchanged": 0,
        "stale": 0,
        "superseded": 0,
    }
    assert seen[2]["skipped"] == 6 and seen[2]["unchanged"] == 1
    assert seen[3]["superseded"] == 1 and seen[3]["stale"] == 1 and seen[3]["loaded"] == 1
    # The input cell says both identities of SPEC §2.
    assert (
        'title="7 read = 0 skipped + 2 rejected + 5 staged; 5 staged = 0 superseded + 5 inserted + 0 updated'
        ' + 0 unchanged + 0 stale"'
    ) in _row(body, 1)
    for cls in ("js-input", "js-loaded", "js-rejected", "js-skipped"):
        assert cls in _row(body, 1)


def test_markers_for_dry_run_retry_backfill_and_reprocess(client, app, conn):
    upload(client, SAMPLE_INPUT.read_bytes(), "dry.json", dry_run="y")  # 1: a dry run
    app.extensions["sluice_runs"].drain()
    upload(client, SAMPLE_INPUT.read_bytes(), "real.json")  # 2
    app.extensions["sluice_runs"].drain()
    late = [{"key": f"late-{i}", "name": "n", "value": i, "ts": "2024-01-01T00:00:00Z"} for i in range(3)]
    upload(client, "\n".join(map(json.dumps, late)).encode(), "late.jsonl")  # 3: all older than the watermark
    app.extensions["sluice_runs"].drain()
    assert (
        client.post("/runs/3/backfill", data={"csrf_token": token(client, "/runs/3")}).status_code == 303
    )  # 4
    upload(client, SAMPLE_INPUT.read_bytes(), "cancelled.json")  # 5, cancelled, then retried: 6
    client.post("/runs/5/cancel", data={"csrf_token": token(client, "/runs/5")})
    assert client.post("/runs/5/retry", data={"csrf_token": token(client, "/runs/5")}).status_code == 303
    letter = client.get("/api/dead-letters?status=open").get_json()["items"][0]
    assert client.post(f"/api/dead-letters/{letter['id']}/reprocess").status_code == 200  # 7
    app.extensions["sluice_runs"].drain()
    body = text(client.get("/runs"))
    markers = {i: re.findall(r'class="marker ([a-z-]+)"', _row(body, i)) for i in range(1, 8)}
    assert markers == {1: ["dry-run"], 2: [], 3: [], 4: ["backfill"], 5: [], 6: ["retry"], 7: ["reprocess"]}
    assert 'backfill of <a href="/runs/3">#3</a>' in _row(body, 4)
    assert 'retry of <a href="/runs/5">#5</a>' in _row(body, 6)
    assert f'dead letter <a href="/dead-letters/{letter["id"]}">#{letter["id"]}</a>' in _row(body, 7)
    assert 'data-warnings="dry_run"' in _row(body, 1)  # the warnings marker as before


def test_file_names_wrap_at_separators_only_and_keep_their_full_name(client, conn):
    name = "customer_orders-2026.12.02_<export>.jsonl"
    create_run(conn, kind="cli", source_name=name)
    row = _row(text(client.get("/runs")), 1)
    assert 'title="customer_orders-2026.12.02_&lt;export&gt;.jsonl"' in row
    assert "customer_<wbr>orders-<wbr>2026.<wbr>12.<wbr>02_<wbr>&lt;export&gt;.<wbr>jsonl" in row


# --- filters --------------------------------------------------------------------------------------------


def test_filter_by_kind_and_status_narrow_the_list(client, app, conn):
    run_file(conn, SAMPLE_INPUT)  # 1: cli, succeeded
    upload(client, b"[1, 2,", "broken.json")  # 2: upload, failed
    app.extensions["sluice_runs"].drain()
    upload(client, SAMPLE_INPUT.read_bytes(), "waiting.json")  # 3: upload, queued (on SQLite: in the intake)
    assert _run_ids(text(client.get("/runs"))) == [3, 2, 1]
    assert _run_ids(text(client.get("/runs?kind=upload"))) == [3, 2]
    assert _run_ids(text(client.get("/runs?kind=cli"))) == [1]
    assert _run_ids(text(client.get("/runs?kind=upload&status=failed"))) == [2]
    assert _run_ids(text(client.get("/runs?kind=upload&status=queued"))) == [3]
    page = text(client.get("/runs?kind=upload&status=failed"))
    assert '<option value="upload" selected>' in page and '<option value="failed" selected>' in page


def test_filter_by_dataset(client, conn):
    name = f"orders_{uuid.uuid4().hex[:8]}"
    create_dataset(conn, name, {"key": "id", "version": "at", "fields": []})
    create_run(conn, kind="cli", source_name="events.json")
    create_run(conn, kind="cli", source_name="orders.json", dataset=name)
    page = text(client.get(f"/runs?dataset={name}"))
    assert _run_ids(page) == [2]
    assert f'<option value="{name}" selected>' in page and '<select id="f-dataset" name="dataset">' in page
    assert _run_ids(text(client.get("/runs?dataset=events"))) == [1]
    assert client.get("/runs?dataset=nope").status_code == 404


def test_filter_by_queued_days_includes_both_ends(client, conn):
    for i in range(5):
        run_id = create_run(conn, kind="cli", source_name=f"day-{i}.json")
        _on_day(conn, run_id, date(2026, 11, 1) + timedelta(days=i))  # run i + 1 on 1 + i November
    assert _run_ids(text(client.get("/runs?from=2026-11-02&to=2026-11-04"))) == [4, 3, 2]
    assert _run_ids(text(client.get("/runs?from=2026-11-04"))) == [5, 4]
    assert _run_ids(text(client.get("/runs?to=2026-11-01"))) == [1]
    assert _run_ids(text(client.get("/runs?from=2026-11-03&to=2026-11-03"))) == [3]
    page = text(client.get("/runs?from=2026-11-02&to=2026-11-04"))
    assert (
        'name="from" type="date" value="2026-11-02"' in page
        and 'name="to" type="date" value="2026-11-04"' in page
    )


def test_filters_are_kept_in_the_pager_links(client, conn):
    for i in range(60):
        run_id = create_run(conn, kind="cli" if i % 2 else "upload", source_name=f"f-{i}.json")
        _on_day(conn, run_id, date(2026, 10, 1) + timedelta(days=i % 3))
    # 60 runs: 30 of kind cli, over three days; 20 of them on 2 or 3 October, fewer than a page…
    assert len(_run_ids(text(client.get("/runs?kind=cli&from=2026-10-02&to=2026-10-03")))) == 20
    for i in range(60, 130):
        run_id = create_run(conn, kind="cli", source_name=f"f-{i}.json")
        _on_day(conn, run_id, date(2026, 10, 2))
    # …and with 70 more, the filtered list pages: every link keeps every filter.
    url, seen = "/runs?kind=cli&status=queued&from=2026-10-02&to=2026-10-03", []
    while url:
        body = text(client.get(url))
        seen += _run_ids(body)
        url = _next_link(body)
        if url:
            assert all(p in url for p in ("kind=cli", "status=queued", "from=2026-10-02", "to=2026-10-03")), (
                url
            )
    assert len(seen) == 90 and seen == sorted(seen, reverse=True)
    prev = html.unescape(re.search(r'href="([^"]+)" rel="prev"', body).group(1))
    assert "kind=cli" in prev and "from=2026-10-02" in prev


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-13-01", "From &#39;2026-13-01&#39;: not a date: write it as YYYY-MM-DD"),
        ("to=yesterday", "To &#39;yesterday&#39;: not a date"),
        ("from=20261101", "From &#39;20261101&#39;: not a date"),
        ("from=2026-11-05&to=2026-11-01", "The range starts (2026-11-05) after it ends (2026-11-01)"),
    ],
)
def test_a_bad_date_says_so_and_shows_the_list_without_the_range(client, conn, query, message):
    create_run(conn, kind="cli", source_name="x.json")
    response = client.get(f"/runs?{query}")
    assert response.status_code == 400
    body = text(response)
    assert message in body and "The date range was not applied." in body and 'role="alert"' in body
    assert _run_ids(body) == [1]


def test_empty_states_for_no_runs_and_for_no_match(client, conn):
    empty = text(client.get("/runs"))
    assert (
        "No runs yet." in empty
        and "No runs yet: the chart of records per run starts with the first." in empty
    )
    assert "<svg" not in empty
    create_run(conn, kind="cli", source_name="x.json")
    none = text(client.get("/runs?kind=retry&status=failed"))
    assert _run_ids(none) == []
    assert (
        "No runs match.</strong> There are no runs of" in none and "with status failed of kind retry" in none
    )
    assert "Clear filters" in none
    assert (
        "No runs with status failed of kind retry match: nothing to chart." in none
    )  # the charts say so too


# --- charts ---------------------------------------------------------------------------------------------


def _svg(body: str, figure: str) -> str:
    return re.search(rf'<figure class="chart" id="{figure}">.*?</figure>', body, re.DOTALL).group(0)


def _ticks(svg: str) -> list[str]:
    return re.findall(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="end"[^>]*>([^<]+)</text>', svg)


def test_the_runs_chart_has_labelled_axes_on_a_linear_scale(client, conn):
    run_file(conn, SAMPLE_INPUT)  # 7 records
    run_file(conn, SAMPLE_INPUT)
    chart = _svg(text(client.get("/runs")), "runs-chart")
    assert 'class="linear"' in chart and "Log scale" not in chart
    assert ">records</text>" in chart and ">run, oldest on the left</text>" in chart
    assert _ticks(chart) == ["0", "2", "4", "6", "8"]
    assert ">#1</text>" in chart and ">#2</text>" in chart
    assert '<title id="runs-chart-title">' in chart and '<desc id="runs-chart-desc">' in chart
    assert 'aria-labelledby="runs-chart-title runs-chart-desc"' in chart


def test_the_runs_chart_switches_to_a_log_scale_for_runs_of_1_and_100000_records(client, conn, write):
    run_file(conn, records_file(write, "one.jsonl", _records(1)))
    big = create_run(conn, kind="cli", source_name="big.jsonl")  # 100,000 records: its row, not a real run
    _set(
        conn,
        big,
        status="succeeded",
        input_records=100_000,
        staged=99_000,
        inserted=99_000,
        rejected=1_000,
        started_at="2026-01-01T00:00:00",
        finished_at="2026-01-01T00:00:10",
    )
    chart = _svg(text(client.get("/runs")), "runs-chart")
    assert 'class="log"' in chart and ">records (log scale)</text>" in chart
    assert (
        '<strong class="scale-note">Log scale</strong>: the largest run (100,000 records) is 100,000× the '
        "smallest (1)" in chart
    )
    assert _ticks(chart) == ["1", "10", "100", "1k", "10k", "100k"]
    heights = {
        part: float(h)
        for part, h in re.findall(
            r'<rect class="(loaded|rejected)" x="[\d.]+" y="[\d.]+" '
            r'width="[\d.]+" height="([\d.]+)"/>',
            chart,
        )[-2:]
    }
    assert 0 < heights["rejected"] < heights["loaded"]  # side by side, each on the log scale


def test_the_per_day_chart_sums_loaded_and_the_reject_rate_per_day(client, conn, write):
    yesterday, earlier = TODAY - timedelta(days=1), TODAY - timedelta(days=5)
    run_file(conn, SAMPLE_INPUT)  # 1: 5 loaded, 2 of 7 rejected
    run_file(conn, records_file(write, "a.jsonl", _records(3, prefix="a")))  # 2: 3 loaded
    run_file(conn, records_file(write, "b.jsonl", _records(1, 1, prefix="b")))  # 3: 1 loaded, 1 of 2 rejected
    run_file(
        conn, records_file(write, "dry.jsonl", _records(4, 4, prefix="c")), options=Options(dry_run=True)
    )
    with pytest.raises(RunFailed):  # 5: over its reject threshold, nothing kept
        run_file(
            conn,
            records_file(write, "bad.jsonl", _records(1, 9, prefix="e")),
            options=Options(max_reject_rate=0.5),
        )
    for run_id in (1, 2, 4, 5):
        _on_day(conn, run_id, yesterday)
    _on_day(conn, 3, earlier)
    body = text(client.get("/runs"))
    chart = _svg(body, "days-chart")
    days = dict(re.findall(r'<tr data-day="([\d-]+)">(.*?)</tr>', chart, re.DOTALL))
    cells = {d: re.findall(r'<td class="n">([^<]*)</td>', row) for d, row in days.items()}
    # runs, loaded, rejected, checked, reject rate: the dry run and the failed run count as runs, not records.
    assert cells == {
        yesterday.isoformat(): ["4", "8", "2", "10", "20.0 %"],
        earlier.isoformat(): ["1", "1", "1", "2", "50.0 %"],
    }
    assert (
        ">records loaded</text>" in chart and ">reject rate</text>" in chart and ">day (UTC)</text>" in chart
    )
    assert _ticks(chart) == ["0", "2", "4", "6", "8"]
    assert re.findall(r'<text class="tick rate-tick"[^>]*>([^<]+)</text>', chart) == [
        "0 %",
        "25 %",
        "50 %",
        "75 %",
        "100 %",
    ]
    assert f"{(TODAY - timedelta(days=29)).isoformat()} to {TODAY.isoformat()}" in chart
    assert chart.count('class="rate-dot"') == 2
    # The chart follows the filters: only the upload… of which there is none.
    assert "No runs of kind upload match in the 30 days charted." in text(client.get("/runs?kind=upload"))
    # A date range ends the chart at its last day.
    ranged = _svg(text(client.get(f"/runs?from={earlier - timedelta(days=2)}&to={earlier}")), "days-chart")
    assert f"{earlier - timedelta(days=2)} to {earlier}" in ranged and ranged.count("<tr data-day=") == 1


def test_the_per_day_numbers_come_from_one_query(app, conn, engine):
    from sqlalchemy import event

    from app.queries import runs_per_day

    for i in range(3):
        run_id = create_run(conn, kind="cli", source_name=f"{i}.json")
        _on_day(conn, run_id, TODAY - timedelta(days=i * 7))
    statements = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    days = runs_per_day(conn, "events", kind="cli", today=TODAY)
    grouped = [s for s in statements if "GROUP BY" in s.upper()]
    assert len(days) == 30 and sum(d["runs"] for d in days) == 3
    assert len(grouped) == 1 and "runs" in grouped[0]


# --- API ------------------------------------------------------------------------------------------------


def test_the_api_takes_the_same_filters(client, app, conn):
    run_file(conn, SAMPLE_INPUT)  # 1: cli
    upload(client, b"[1, 2,", "broken.json")  # 2: upload, failed
    app.extensions["sluice_runs"].drain()
    _on_day(conn, 1, date(2026, 11, 1))
    _on_day(conn, 2, date(2026, 11, 3))

    def ids(query: str) -> list[int]:
        response = client.get(f"/api/runs?{query}")
        assert response.status_code == 200, response.get_json()
        return [r["id"] for r in response.get_json()["items"]]

    assert (
        ids("kind=cli") == [1] and ids("kind=upload&status=failed") == [2] and ids("status=succeeded") == [1]
    )
    assert (
        ids("from=2026-11-02") == [2]
        and ids("to=2026-11-02") == [1]
        and ids("from=2026-11-01&to=2026-11-03") == [2, 1]
    )
    for query, needle in (
        ("from=2026-02-30", "'from': not a date"),
        ("to=2026-1-1", "'to': not a date"),
        ("from=2026-11-05&to=2026-11-01", "after it ends"),
        ("kind=nightly", "'kind'"),
    ):
        response = client.get(f"/api/runs?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_parameter"
        assert needle in response.get_json()["error"]["message"], response.get_json()
    spec = client.get("/api/openapi.json").get_json()
    params = {p["name"]: p for p in spec["paths"]["/api/runs"]["get"]["parameters"]}
    assert params["from"]["schema"]["format"] == "date" and params["to"]["schema"]["format"] == "date"
    assert params["kind"]["schema"]["enum"] == ["upload", "api", "cli", "reprocess", "retry"]
    assert json.dumps(params["from"]).count("UTC day") == 1
