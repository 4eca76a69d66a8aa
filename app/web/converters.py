"""URL converters: the app-wide `int` accepts only ids a database row can have."""
from werkzeug.routing import IntegerConverter

MAX_ID = 2 ** 63 - 1  # the largest BIGINT: a larger id matches no row and cannot even be bound to SQL


class IdConverter(IntegerConverter):
    """`<int:…>` as an id: ASCII digits only, 1 to 2**63 - 1; anything else does not match the route (404).

    Werkzeug's own `int` matches `\\d+`, which takes any Unicode digit (`/runs/٣` would be run 3), and
    has no upper bound (an id past BIGINT fails in the database instead of answering 404).
    """

    regex = r"[0-9]+"  # in Python's re, a class of ASCII digits: unlike \d it takes no other script's

    def __init__(self, map, fixed_digits: int = 0, min: int | None = 1, max: int | None = MAX_ID,
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)
