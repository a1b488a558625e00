"""C-ECHO SCP."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom.events import Event

__all__ = ["handle_echo"]


def handle_echo(event: Event) -> int:
    """Answer a C-ECHO.

    Statuses: 0x0000 Success (the association itself was already vetted).
    """
    return 0x0000
