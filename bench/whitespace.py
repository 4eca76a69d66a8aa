#!/usr/bin/env python3
"""Read speed of white space against ordinary records, through Sluice's reader.

    python bench/whitespace.py [--size MiB] [--run] [--out bench/out]

Writes into `--out` (git-ignored) files of about `--size` MiB (default 1024): white space around a
few records as a document (every kind of JSON white space), as JSON Lines (blank lines, and one
line of spaces), a gzip of the document, and ordinary records of the same size from
bench/make_records.py (document and JSON Lines). Each file is first read once as plain bytes (so
that it is in the page cache: the column "file MB/s" is that read, the floor for any reader), then
read through `app.pipeline.extract.Reader` in a process of its own, which reports its time and its
peak memory (RSS); MB/s counts decompressed input. With `--run`, each white-space file is also run through `run_file` on a
temporary SQLite database. Files already written are reused.
"""
import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
RECORD = '{"key":"k%d","name":"n","value":%d,"ts":"2025-01-15T12:00:0%d"}'


def write_white(path: Path, size: int, shape: str) -> None:
    """A file of about `size` bytes of white space around three records."""
    unit = {"mixed": b" \t\r\n", "newlines": b"\n", "spaces": b" "}[
        {"document": "mixed", "document-spaces": "spaces", "jsonl-blank-lines": "newlines",
         "jsonl-spaces": "spaces"}[shape]]
    block = unit * (MiB // len(unit))
    third = max(1, size // MiB // 3)
    records = [(RECORD % (i, i, i)).encode() for i in range(3)]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as out:
        def pad():
            for _ in range(third):
                out.write(block)
        if shape.startswith("document"):
            pad()
            out.write(b"[" + records[0] + b",")
            pad()
            out.write(records[1] + b",")
            pad()
            out.write(records[2] + b"]")
        else:
            out.write(records[0] + b"\n")
            pad()
            out.write(b"\n" + records[1] + b"\n")
            pad()
            out.write(b"\n" + records[2] + b"\n")
            pad()


def files(out: Path, size_mib: int) -> list[tuple[str, Path]]:
    """Write (or reuse) the bench's files; return them with their names."""
    out.mkdir(parents=True, exist_ok=True)
    size = size_mib * MiB
    made = []
    for shape, suffix in (("document", ".json"), ("document-spaces", ".json.gz"),
                          ("jsonl-blank-lines", ".jsonl"), ("jsonl-spaces", ".jsonl")):
        path = out / f"white-{shape}-{size_mib}MiB{suffix}"
        if not path.exists():
            write_white(path, size, shape)
        made.append((f"white space, {shape}" + (" (gzip)" if suffix.endswith(".gz") else ""), path))
    count = size // 84  # make_records writes about 84 bytes a record
    for fmt, suffix in (("json", ".json"), ("ndjson", ".jsonl")):
        path = out / f"records-{size_mib}MiB{suffix}"
        if not path.exists():
            subprocess.run([sys.executable, str(ROOT / "bench" / "make_records.py"), str(count), str(path),
                            "--format", fmt], check=True)
        made.append((f"records, {'document' if fmt == 'json' else 'jsonl'}", path))
    return made


def read_one(path: str) -> None:
    """In a process of its own: read the file through the Reader; print seconds, records, bytes, RSS."""
    sys.path.insert(0, str(ROOT))
    from app.pipeline.extract import Reader

    chunks = 0

    def tick():
        nonlocal chunks
        chunks += 1

    with open(path, "rb") as f:
        start = time.perf_counter()
        reader = Reader(f, 1 << 42, on_chunk=tick)
        records = sum(1 for _ in reader)
        seconds = time.perf_counter() - start
        decompressed = reader.stream.count
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "records": records, "bytes": decompressed, "rss": peak,
                      "chunks": chunks}))


def run_one(path: str) -> None:
    """In a process of its own: run the file through the pipeline on a temporary SQLite database."""
    sys.path.insert(0, str(ROOT))
    from app.database import make_engine
    from app.pipeline import run_file
    from app.schema import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        with engine.connect() as conn:
            start = time.perf_counter()
            summary = run_file(conn, path)
            seconds = time.perf_counter() - start
        engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "records": summary["input_records"], "rss": peak}))


def read_bytes(path: Path) -> float:
    """Read the file as plain bytes (warming the page cache); return MB/s."""
    start = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(16 * MiB):
            pass
    return path.stat().st_size / 1e6 / (time.perf_counter() - start)


def measure(mode: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, f"--{mode}-one", str(path)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB of input per file (default 1024)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--run", action="store_true", help="also run the white-space files through run_file")
    parser.add_argument("--read-one", help=argparse.SUPPRESS)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_one:
        return read_one(args.read_one)
    if args.run_one:
        return run_one(args.run_one)
    print(f"{'input':38} {'MB':>7} {'records':>10} {'seconds':>8} {'MB/s':>7} {'peak RSS':>9} {'file MB/s':>9}")
    for name, path in files(args.out, args.size):
        floor = read_bytes(path)
        r = measure("read", path)
        mb = r["bytes"] / 1e6
        print(f"{name:38} {mb:7.0f} {r['records']:10,} {r['seconds']:8.2f} {mb / r['seconds']:7.1f} "
              f"{r['rss'] / MiB:5.0f} MiB {floor:9.0f}", flush=True)
        if args.run and name.startswith("white"):
            r = measure("run", path)
            print(f"{'  … through run_file (SQLite)':38} {mb:7.0f} {r['records']:10,} {r['seconds']:8.2f} "
                  f"{mb / r['seconds']:7.1f} {r['rss'] / MiB:5.0f} MiB", flush=True)
    print(f"files in {os.path.relpath(args.out, Path.cwd())}; MB/s counts decompressed bytes")


if __name__ == "__main__":
    main()
