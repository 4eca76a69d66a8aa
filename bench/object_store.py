"""Memory and time of the S3 upload store: put and read back one large file through `SLUICE_UPLOAD_URL=s3://…`.

    PYTHONPATH=. python bench/object_store.py [--mb 50]

Starts moto's S3 server in a child process on a loopback port (it keeps objects in its own memory,
not this process's), writes a JSON Lines file of about --mb MB, stores it with the upload store and
reads it back in 1 MiB reads as the pipeline does, and prints this process's peak RSS growth for each.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 1e6


class Peak:
    """The highest RSS seen, sampled every 5 ms, while a block runs, less the RSS before it."""

    def __enter__(self):
        self.before, self.top, self.done = rss_mb(), 0.0, threading.Event()
        self.thread = threading.Thread(target=self._sample)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.top = max(self.top, rss_mb())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.growth = max(self.top, rss_mb()) - self.before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                          SLUICE_S3_ENDPOINT=endpoint)
        import boto3

        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        from app.runs.store import CHUNK, open_store

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big.jsonl"
            with open(path, "w") as out:
                i = 0
                while out.tell() < args.mb * 1_000_000:
                    out.write(json.dumps({"key": f"k-{i:08d}", "name": "signup", "value": i,
                                          "ts": "2025-01-10T08:00:00"}) + "\n")
                    i += 1
            size = path.stat().st_size
            store = open_store("s3://bench/uploads", None)
            base = rss_mb()
            started = time.perf_counter()
            with Peak() as put, open(path, "rb") as f:
                stored = store.put(f)
            put_s = time.perf_counter() - started
            started, read = time.perf_counter(), 0
            with Peak() as get:
                f = store.open(str(stored.path))
                try:
                    while block := f.read(CHUNK):
                        read += len(block)
                finally:
                    f.close()
            get_s = time.perf_counter() - started
        assert read == size
        print(f"file {size / 1e6:.1f} MB; RSS before {base:.0f} MB")
        print(f"put:  {put_s:.2f} s, peak RSS growth {put.growth:.1f} MB")
        print(f"read: {get_s:.2f} s, peak RSS growth {get.growth:.1f} MB")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
