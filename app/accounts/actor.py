"""Who made a change: a signed-in user, a user's API token, or the command line (`cli:<os user>`)."""
import getpass
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """The one who acts, as the audit log records it; `label` is what "who" columns show."""

    label: str
    user_id: int | None = None
    user_name: str | None = None  # as the user typed it at creation
    token_id: int | None = None
    token_name: str | None = None
    address: str | None = None  # the client's address, for a web or API request

    @classmethod
    def of_user(cls, user_id: int, user_name: str, *, token_id: int | None = None,
                token_name: str | None = None, address: str | None = None) -> "Actor":
        """A user acting through a session, or through one of their tokens (labelled `alice (token deploy)`)."""
        label = user_name if token_id is None else f"{user_name} (token {token_name})"
        return cls(label=label[:128], user_id=user_id, user_name=user_name, token_id=token_id,
                   token_name=token_name, address=address)


def os_user() -> str:
    """The operating system's name for the user running this process (its uid when it has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry and no USER
        return str(os.getuid())


def cli_actor() -> Actor:
    """The command line acts as `cli:<operating-system user>` (SPEC §11)."""
    return Actor(label=f"cli:{os_user()}"[:128])
