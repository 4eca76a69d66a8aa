"""Forged cursors and text no row can hold get a clear answer from the pages, never a server error."""
import base64
import json

import pytest


def _cursor(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/runs", "/dead-letters", "/target", "/target?sort=ts", "/lineage/evt-001"])
@pytest.mark.parametrize("values", [["abc"], [1e30], [None], [True], [2 ** 70], ["a\u0000"], ["x", "y"]])
def test_forged_cursor_is_refused_not_a_server_error(client, path, values):
    sep = "&" if "?" in path else "?"
    response = client.get(f"{path}{sep}cursor={_cursor(values)}")
    assert response.status_code in (200, 400)
    assert response.status_code != 500


@pytest.mark.parametrize("path", ["/target?key=a%00", "/target?name=%00b", "/lineage/a%00b",
                                  "/target?key=%ED%A0%80"])
def test_text_no_row_can_hold_finds_nothing(client, path):
    response = client.get(path)
    assert response.status_code in (200, 404)
