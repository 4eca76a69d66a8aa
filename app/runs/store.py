"""The upload store: files streamed in under their SHA-256, sniffed and size-limited.

Named by `SLUICE_UPLOAD_URL`: a local folder (`file:///abs/folder` or a plain path), whose files
runs record by their absolute path as always, or S3-compatible storage (`s3://bucket/prefix`),
whose objects runs record by URL (`s3://bucket/prefix/<sha256>`), so every host reads the same file.
"""
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from ..config import ConfigError, upload_url
from ..formatting import human_bytes
from ..pipeline import InputError, TooLarge, sniff

CHUNK = 1 << 20
SNIFF_BYTES = 4096
# Object reads: one ranged GET per buffer, and multipart parts in flight on upload (memory bound).
READ_BUFFER = 8 * CHUNK
PART_SIZE, PARTS_IN_FLIGHT = 8 * CHUNK, 4


@dataclass(frozen=True)
class Stored:
    """A file in the store: where it is (path or URL), its size and digest, and whether this upload created it."""

    path: Path | str
    size: int
    sha256: str
    new: bool


def _spool(stream: BinaryIO, folder: str | Path | None, limit: int | None) -> tuple[str, int, str]:
    """Copy `stream` into a temporary file in `folder`, sniffed and size-checked; return (path, size, sha256)."""
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            head = b""
            while len(head) < SNIFF_BYTES:
                block = stream.read(SNIFF_BYTES - len(head))
                if not block:
                    break
                head += block
            reason = sniff(head)
            if reason:
                raise InputError(reason)
            block = head
            while block:
                size += len(block)
                if limit is not None and size > limit:
                    raise TooLarge(f"the file is larger than the upload size limit of {human_bytes(limit)}")
                digest.update(block)
                out.write(block)
                block = stream.read(CHUNK)
        return tmp, size, digest.hexdigest()
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_available(path: str | None, removed_at: str | None) -> bool:
    """Whether a run's file can still be read: recorded, not removed by housekeeping, still there.

    An object's presence is not asked of the object store (pages list many runs): housekeeping
    records its removal, and a run of a vanished object fails saying the file is gone.
    """
    if not path or removed_at is not None:
        return False
    return "://" in path or Path(path).is_file()


class UploadStore:
    """Stored uploads in one folder, each named by its SHA-256 (the same content is stored once)."""

    def __init__(self, folder: str | Path, max_bytes: int | None):
        self.folder = Path(folder).absolute()
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, stream: BinaryIO) -> Stored:
        """Store a stream; raise InputError when it does not start like JSON, TooLarge over the limit."""
        tmp, size, sha256 = _spool(stream, self.folder, self.max_bytes)
        path = self.folder / sha256
        new = not path.exists()
        # Same content under the same name: replacing is harmless, and the fresh mtime keeps
        # housekeeping from removing a file that an earlier run's retention has just run out on.
        os.replace(tmp, path)
        return Stored(path, size, sha256, new)

    def discard(self, stored: Stored) -> None:
        """Remove a file this upload created when no run came to refer to it."""
        if stored.new:
            Path(stored.path).unlink(missing_ok=True)

    def owns(self, path: str | Path | None) -> bool:
        """Whether `path` is a file of this store (a `cli` run's file_path is the user's own file)."""
        return bool(path) and Path(path).parent == self.folder

    def prefix(self) -> str:
        """The path prefix of every stored file, for a query over runs' file paths."""
        return f"{self.folder}{os.sep}"

    available = staticmethod(file_available)

    @staticmethod
    def open(path: str) -> BinaryIO:
        """Open a run's file for reading; FileNotFoundError when it is gone."""
        return open(path, "rb")

    @staticmethod
    def modified_at(path: str) -> datetime | None:
        """When a stored file was last written (UTC), or None when it is gone."""
        try:
            return datetime.fromtimestamp(Path(path).stat().st_mtime, UTC)
        except FileNotFoundError:
            return None

    def remove(self, path: str | Path) -> None:
        """Delete a stored file (housekeeping)."""
        Path(path).unlink(missing_ok=True)

    def check(self) -> None:
        """Nothing to check for a folder: creating it succeeded."""


class ObjectUploadStore(UploadStore):
    """Stored uploads as objects of an S3-compatible bucket, each keyed by its SHA-256 under the URL's prefix.

    An upload is spooled to a local temporary file while it is hashed, sniffed and size-checked, then
    streamed up in parts: S3 has no rename, so naming by digest would otherwise need a server-side
    copy, and a refused upload (not JSON, too large) must leave no object behind.
    """

    def __init__(self, url: str, max_bytes: int | None, environ=os.environ):
        from obstore.store import S3Store

        parts = urlsplit(url)
        self.url = f"s3://{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
        self.max_bytes = max_bytes
        endpoint = environ.get("SLUICE_S3_ENDPOINT") or environ.get("AWS_ENDPOINT_URL") or environ.get("AWS_ENDPOINT")
        options = {"endpoint": endpoint} if endpoint else {}
        allow_http = bool(endpoint and endpoint.startswith("http://")) or environ.get("AWS_ALLOW_HTTP") == "true"
        self.client = S3Store.from_url(self.url, client_options={"allow_http": allow_http}, **options)
        self.folder = None  # no local folder (RunService.upload_dir)

    def _key(self, path: str | Path) -> str:
        return str(path)[len(self.prefix()):]

    def put(self, stream: BinaryIO) -> Stored:
        """Store a stream as an object; raise InputError when it does not start like JSON, TooLarge over the limit."""
        import obstore

        tmp, size, sha256 = _spool(stream, None, self.max_bytes)
        try:
            new = self.modified_at(self.prefix() + sha256) is None
            # Put even when it exists: its fresh Last-Modified keeps housekeeping off it (see UploadStore.put).
            obstore.put(self.client, sha256, Path(tmp), chunk_size=PART_SIZE, max_concurrency=PARTS_IN_FLIGHT)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return Stored(self.prefix() + sha256, size, sha256, new)

    def discard(self, stored: Stored) -> None:
        """Remove an object this upload created when no run came to refer to it."""
        if stored.new:
            self.remove(stored.path)

    def owns(self, path: str | Path | None) -> bool:
        """Whether `path` is an object of this store (a `cli` run's file_path is the user's own file)."""
        return bool(path) and str(path).startswith(self.prefix()) and "/" not in self._key(path)

    def prefix(self) -> str:
        """The URL prefix of every stored object, for a query over runs' file paths."""
        return f"{self.url}/"

    def open(self, path: str) -> BinaryIO:
        """Open a run's file for reading, streamed in ranged reads if it is an object; FileNotFoundError when gone."""
        if not self.owns(path):
            return UploadStore.open(path)
        import obstore

        # obstore raises its NotFoundError, a FileNotFoundError, when the object is gone.
        return _ObjectFile(obstore.open_reader(self.client, self._key(path), buffer_size=READ_BUFFER))

    def modified_at(self, path: str) -> datetime | None:
        """When a stored object was last written (UTC), or None when it is gone."""
        import obstore

        try:
            return obstore.head(self.client, self._key(path))["last_modified"]
        except FileNotFoundError:
            return None

    def remove(self, path: str | Path) -> None:
        """Delete a stored object (housekeeping); one already gone is no error."""
        import obstore

        try:
            obstore.delete(self.client, self._key(path))
        except FileNotFoundError:
            pass

    def check(self) -> None:
        """Raise ConfigError when the bucket cannot be listed (unknown, unreachable, or no permission)."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            next(iter(obstore.list(self.client, chunk_size=1)), None)
        except (BaseError, OSError, ValueError) as exc:  # a bucket that is missing, refused or unreachable
            line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ConfigError(f"SLUICE_UPLOAD_URL {self.url} cannot be used: {line[:300]}") from None


class _ObjectFile:
    """A binary file over obstore's buffered reader: plain `bytes`, `seek`, `tell`, `close`."""

    def __init__(self, reader):
        self.reader = reader

    def read(self, size: int = -1) -> bytes:
        return bytes(self.reader.read(None if size is None or size < 0 else size))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.reader.seek(offset, whence)

    def tell(self) -> int:
        return self.reader.tell()

    def close(self) -> None:
        self.reader.close()


def open_store(url: str | Path, max_bytes: int | None) -> UploadStore:
    """The upload store named by `url` (`SLUICE_UPLOAD_URL`): a folder path, `file:///abs/folder` or `s3://bucket/prefix`."""
    text = upload_url(str(url)) or str(url)  # ConfigError for a scheme Sluice does not know
    parts = urlsplit(text)
    scheme = parts.scheme.lower() if "://" in text else ""
    if scheme in ("s3", "s3a"):
        if not parts.netloc:
            raise ConfigError(f"SLUICE_UPLOAD_URL {text!r} names no bucket: use s3://bucket/prefix")
        return ObjectUploadStore(text, max_bytes)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"SLUICE_UPLOAD_URL {text!r} names another host: use file:///absolute/folder")
        return UploadStore(unquote(parts.path), max_bytes)
    return UploadStore(text, max_bytes)


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()

