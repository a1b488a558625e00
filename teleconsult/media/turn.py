"""Time-limited TURN credentials, issued per live session and participant.

The scheme is the "TURN REST API" (draft-uberti-behave-turn-rest-00) that
coturn checks with ``use-auth-secret`` / ``static-auth-secret``:

- ``username = "<expiry, Unix time>:<session id>:<participant>"``
- ``credential = base64(HMAC-SHA1(secret, username))``

coturn recomputes the credential from the username and its own copy of the
secret, and refuses a username whose expiry has passed. So teleconsult and
coturn share one secret (``TELECONSULT_TURN_SECRET``, coturn's
``static-auth-secret``) and nothing else: no user database on the TURN
server, and a credential that leaks opens relays only until it expires.
coturn checks the expiry when a relay is allocated, not afterwards (an
allocation made in time lives on while it is refreshed), and clients reuse
the credential when they reconnect during the session, hence a lifetime of
at least the longest session (``TELECONSULT_TURN_TTL_SECONDS`` >=
``TELECONSULT_LIVE_MAX_SECONDS``, checked by the settings).

Each participant gets a username of its own (the session id and their
teleconsult username), so the TURN server's logs and quotas tell them
apart; the server's own peer connections, when they relay too
(``TELECONSULT_TURN_FOR_SERVER``), get ``<expiry>:<session id>``, which no
participant's username can be.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from teleconsult.config import IceServer

if TYPE_CHECKING:
    from teleconsult.config import Settings

__all__ = ["TurnIssuer", "turn_credential"]


def turn_credential(secret: str, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))``: the password coturn expects for ``username``."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class TurnIssuer:
    """Issues an ``IceServer`` entry (the TURN URLs, a username and its credential) per participant."""

    urls: tuple[str, ...]
    secret: SecretStr = field(repr=False)
    ttl_seconds: int = 4 * 3600
    for_server: bool = False
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("TurnIssuer needs at least one turn: or turns: URL")
        if not self.secret.get_secret_value():
            raise ValueError("TurnIssuer needs a secret")
        if self.ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be positive, not {self.ttl_seconds}")

    @classmethod
    def from_settings(cls, settings: Settings) -> TurnIssuer | None:
        if not settings.turn_urls or settings.turn_secret is None:
            return None
        return cls(
            urls=tuple(settings.turn_urls),
            secret=settings.turn_secret,
            ttl_seconds=settings.turn_ttl_seconds,
            for_server=settings.turn_for_server,
        )

    def issue(self, session_id: str, participant: str | None = None) -> IceServer:
        """Credentials for ``participant`` (a username) of ``session_id``; None = the server itself."""
        expires = int(self.clock()) + self.ttl_seconds
        username = f"{expires}:{session_id}"
        if participant is not None:
            username += f":{participant}"
        return IceServer(
            urls=list(self.urls),
            username=username,
            credential=turn_credential(self.secret.get_secret_value(), username),
        )
