"""The upload store: files streamed into a folder under their SHA-256, sniffed and size-limited."""
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..formatting import human_bytes
from ..pipeline import InputError, TooLarge, sniff

CHUNK = 1 << 20
SNIFF_BYTES = 4096


@dataclass(frozen=True)
class Stored:
    """A file in the store: where it is, its size and digest, and whether this upload created it."""

    path: Path
    size: int
    sha256: str
    new: bool


class UploadStore:
    """Stored uploads in one folder, each named by its SHA-256 (the same content is stored once)."""

    def __init__(self, folder: str | Path, max_bytes: int | None):
        self.folder = Path(folder).absolute()
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, stream: BinaryIO) -> Stored:
        """Store a stream; raise InputError when it does not start like JSON, TooLarge over the limit."""
        digest, size, limit = hashlib.sha256(), 0, self.max_bytes
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".upload-")
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
            path = self.folder / digest.hexdigest()
            new = not path.exists()
            # Same content under the same name: replacing is harmless, and the fresh mtime keeps
            # housekeeping from removing a file that an earlier run's retention has just run out on.
            os.replace(tmp, path)
            return Stored(path, size, digest.hexdigest(), new)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def discard(self, stored: Stored) -> None:
        """Remove a file this upload created when no run came to refer to it."""
        if stored.new:
            stored.path.unlink(missing_ok=True)

    def owns(self, path: str | Path | None) -> bool:
        """Whether `path` is a file of this store (a `cli` run's file_path is the user's own file)."""
        return bool(path) and Path(path).parent == self.folder

    def prefix(self) -> str:
        """The path prefix of every stored file, for a query over runs' file paths."""
        return f"{self.folder}{os.sep}"

    @staticmethod
    def available(path: str | None, removed_at: str | None) -> bool:
        """Whether a run's file can still be read: recorded, not removed by housekeeping, still there."""
        return bool(path) and removed_at is None and Path(path).is_file()

    def remove(self, path: str | Path) -> None:
        """Delete a stored file (housekeeping)."""
        Path(path).unlink(missing_ok=True)


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
