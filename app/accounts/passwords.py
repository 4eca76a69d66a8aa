"""Password hashing with Argon2id (argon2-cffi's defaults, RFC 9106's second recommendation)."""
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # a longer one is refused before hashing, so a huge password cannot tie up the server
_hasher = PasswordHasher()
# Verified against when the user name is unknown, so that a wrong name takes as long as a wrong password.
_DUMMY = _hasher.hash("not a password of anyone")


class PasswordError(ValueError):
    """A new password that cannot be used; the message says why."""


def check_new(password: str) -> None:
    """Refuse a new password that is too short or too long (PasswordError)."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise PasswordError(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"a password has at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The Argon2id hash of a new password (checked with `check_new` first)."""
    check_new(password)
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash (unknown user) the same work is done and the answer is False."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether a stored hash was made with weaker parameters than today's (rehashed at the next sign-in)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
