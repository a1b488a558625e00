"""Live exams over WebRTC (aiortc): sessions, the relay through the server, signalling, captures.

``MediaHub`` (``hub.py``) holds the sessions of the process; each
``LiveSession`` (``sessions.py``) holds one peer connection per participant
and relays the sender's media to the viewers through switching tracks
(``sources.py``) and the viewers' voices back (``tracks.py``).
``signalling.py`` is the message protocol, ``annotations.py`` the data
channel's, ``access.py`` who may take which role, ``capture.py`` snapshots
and clips as DICOM, ``recording.py`` the session's recording to an MP4 file,
``turn.py`` the TURN credentials issued to each participant.
The HTTP and WebSocket routes are ``teleconsult.api.routes.live``.
"""

import logging

from teleconsult.media.access import allowed_roles
from teleconsult.media.hub import SYSTEM, MediaHub, MediaOptions
from teleconsult.media.sessions import LiveSession, ParticipantRole, Peer, SessionStatus, SessionView
from teleconsult.media.signalling import Signalling, SignallingClosedError, memory_pair, serve_peer
from teleconsult.media.turn import TurnIssuer, turn_credential

__all__ = [
    "SYSTEM",
    "LiveSession",
    "MediaHub",
    "MediaOptions",
    "ParticipantRole",
    "Peer",
    "SessionStatus",
    "SessionView",
    "Signalling",
    "SignallingClosedError",
    "TurnIssuer",
    "allowed_roles",
    "memory_pair",
    "serve_peer",
    "turn_credential",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
