"""Write a deterministic file of 12-field order records for the dataset benchmark (bench/dataset.py).

    python bench/make_dataset_records.py --records N --out FILE [--seed 42] [--start 2024-01-01T00:00:00]
                                         [--format json|ndjson]

Each record has the key `id`, the version `updated_at` and ten payload fields of every type:
`customer`, `email`, `country` (strings), `total` (number), `quantity` (integer), `discount` (number,
optional), `paid` (boolean), `shipped_at` (timestamp, optional), `notes` (string, optional) and
`attrs` (json, optional). About 20 % of records repeat an earlier key (updates, some older than the
record they follow), about 5 % are invalid in one of 18 ways spread over the key, the payload fields
and the version, and `updated_at` rises one second per record with up to 90 s of jitter, in several
spellings (Z, an offset, a space, fractions). Records are written as they are made (memory stays
flat at any N). Standard library only; the same arguments always give the same bytes.
"""
import argparse
import json
import random
from datetime import datetime, timedelta

# The shape the benchmark creates (SPEC §10 plain JSON form); `bench/dataset.py` imports it.
SHAPE = {
    "key": "id",
    "version": "updated_at",
    "fields": [
        {"name": "customer", "type": "string", "required": True, "max_length": 100, "sortable": True,
         "searchable": True},
        {"name": "email", "type": "string", "required": True, "max_length": 200, "searchable": True},
        {"name": "country", "type": "string", "required": True, "max_length": 2},
        {"name": "total", "type": "number", "required": True, "sortable": True},
        {"name": "quantity", "type": "integer", "required": True},
        {"name": "discount", "type": "number"},
        {"name": "paid", "type": "boolean", "required": True},
        {"name": "shipped_at", "type": "timestamp"},
        {"name": "notes", "type": "string"},
        {"name": "attrs", "type": "json"},
    ],
}

COUNTRIES = ("DE", "FR", "NL", "US", "GB", "SE", "IT", "ES", "PL", "JP", "BR", "CA")
FIRST = ("Ada", "Bruno", "Chloé", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kofi",
         "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tomás")
LAST = ("Okafor", "Nguyen", "Schmidt", "Rossi", "García", "Kowalski", "Tanaka", "Silva", "Dubois",
        "Larsen", "Haddad", "O'Brien", "Müller", "Novak", "Ivanova", "Moreau")
CHANNELS = ("web", "app", "phone", "store", "partner")
TAGS = ("gift", "express", "fragile", "bulk", "promo", "repeat", "b2b")
NOTES = ("leave at the door", "call before delivery", "invoice to the head office", "second attempt",
         "customer asked for a single parcel", "replacement for a damaged item")
BAD_TIMESTAMPS = ("2024-13-45T99:99:99", "not-a-date", "2024/01/02 03:04:05", "2024-02-30T10:00:00",
                  "2024-01-02", "20240102T030405")
ERRORS = ("not_an_object", "missing_key", "invalid_key", "missing_customer", "invalid_customer",
          "invalid_email", "invalid_country", "missing_total", "invalid_total", "invalid_quantity",
          "invalid_discount", "missing_paid", "invalid_paid", "invalid_shipped_at", "invalid_notes",
          "missing_timestamp", "invalid_timestamp", "future_timestamp")


def stamp(dt: datetime, rng: random.Random) -> str:
    """A timestamp in one of the spellings SPEC §1 accepts (most in the plain form)."""
    r = rng.random()
    if r < 0.70:
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    if r < 0.85:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if r < 0.92:  # the same instant written in UTC+02:00
        return (dt + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    if r < 0.97:
        return dt.strftime("%Y-%m-%d %H:%M:%S")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randrange(1, 1_000_000):06d}"


def spoil(record: dict, rng: random.Random):
    """Make one record invalid in exactly one way (so its error code is the one named)."""
    error = ERRORS[rng.randrange(len(ERRORS))]
    if error == "not_an_object":
        return rng.choice((["not", "an", "object"], "order", 42, None))
    if error == "missing_key":
        if rng.random() < 0.5:
            del record["id"]
        else:
            record["id"] = rng.choice((None, "", "   "))
    elif error == "invalid_key":
        record["id"] = rng.choice((12345, True, {"id": 1}, "o" * 257))
    elif error == "missing_customer":
        record["customer"] = rng.choice(("", "  ", None))
    elif error == "invalid_customer":
        record["customer"] = "Customer " + "x" * 100
    elif error == "invalid_email":
        record["email"] = rng.choice((42, ["a@example.com"], "a" * 190 + "@example.com"))
    elif error == "invalid_country":
        record["country"] = rng.choice(("DEU", "France", 49))
    elif error == "missing_total":
        del record["total"]
    elif error == "invalid_total":
        record["total"] = rng.choice(("abc", "12x", True, "1_000", "NaN"))
    elif error == "invalid_quantity":
        record["quantity"] = rng.choice((2.5, 3.0, "3.5", "three", True, 9223372036854775808))
    elif error == "invalid_discount":
        record["discount"] = rng.choice(("ten", False, [0.1]))
    elif error == "missing_paid":
        del record["paid"]
    elif error == "invalid_paid":
        record["paid"] = rng.choice(("yes", 1, "true"))
    elif error == "invalid_shipped_at":
        record["shipped_at"] = rng.choice(BAD_TIMESTAMPS + (1704067200,))
    elif error == "invalid_notes":
        record["notes"] = rng.choice((123, {"text": "x"}, "n" * 1025))
    elif error == "missing_timestamp":
        if rng.random() < 0.5:
            del record["updated_at"]
        else:
            record["updated_at"] = rng.choice((None, ""))
    elif error == "invalid_timestamp":
        record["updated_at"] = rng.choice(BAD_TIMESTAMPS + (1704067200,))
    else:  # future_timestamp
        record["updated_at"] = "2999-01-01T00:00:00Z"
    return record


def records(n: int, seed: int, start: datetime):
    """Yield n records: about 20 % repeat an earlier key, about 5 % are invalid."""
    rng = random.Random(seed)
    keys = 0
    for i in range(n):
        if keys and rng.random() < 0.20:
            key = f"o{rng.randrange(keys):08d}"
        else:
            key = f"o{keys:08d}"
            keys += 1
        at = start + timedelta(seconds=i + rng.randint(-90, 90))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        quantity = rng.randint(1, 20)
        record = {
            "id": key,
            "customer": f"{first} {last} {rng.randrange(100_000):05d}",
            "email": f"{first.lower()}.{rng.randrange(1_000_000)}@example.com",
            "country": rng.choice(COUNTRIES),
            "total": round(rng.uniform(1, 5000), 2) if rng.random() < 0.8 else rng.randint(1, 5000),
            "quantity": quantity if rng.random() < 0.95 else str(quantity),
        }
        if rng.random() < 0.4:
            record["discount"] = rng.choice((0.05, 0.1, 0.15, 0.2, 0.25))
        record["paid"] = rng.random() < 0.8
        if record["paid"] and rng.random() < 0.6:
            record["shipped_at"] = stamp(at + timedelta(hours=rng.randint(1, 72)), rng)
        r = rng.random()
        if r < 0.25:
            record["notes"] = rng.choice(NOTES)
        elif r < 0.30:
            record["notes"] = rng.choice(("", "  ", None))  # blank: stored as NULL
        if rng.random() < 0.5:
            record["attrs"] = {"channel": rng.choice(CHANNELS),
                               "tags": rng.sample(TAGS, rng.randint(0, 3)),
                               "gift": rng.random() < 0.1}
        record["updated_at"] = stamp(at, rng)
        yield spoil(record, rng) if rng.random() < 0.05 else record


def write(path: str, n: int, seed: int = 42, start: str = "2024-01-01T00:00:00", fmt: str = "json") -> None:
    """Write the records to `path` as one JSON array (or JSON Lines), one record at a time."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with open(path, "w", encoding="utf-8") as out:
        rows = records(n, seed, datetime.fromisoformat(start))
        if fmt == "ndjson":
            out.writelines(dumps(row) + "\n" for row in rows)
            return
        out.write("[")
        for i, row in enumerate(rows):
            if i:
                out.write(",\n")
            out.write(dumps(row))
        out.write("]\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, required=True, help="how many records")
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", default="2024-01-01T00:00:00", help="updated_at of the first record")
    parser.add_argument("--format", choices=("json", "ndjson"), default="json")
    args = parser.parse_args()
    write(args.out, args.records, args.seed, args.start, args.format)


if __name__ == "__main__":
    main()
