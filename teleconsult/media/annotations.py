"""What travels on a live session's ``annotations`` data channel: pointer, drawings, chat.

Clients send JSON objects with a ``type``; the server checks each against
these models (a pydantic union on ``type``) before forwarding it to every
other participant, stamped with who sent it and when, so one client's
garbage never reaches another's drawing code and nobody can speak in
someone else's name. Positions are fractions of the video picture
(0..1 from the top left corner), so they mean the same spot whatever size
each participant shows the video at.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "ANNOTATIONS_LABEL",
    "MAX_ANNOTATION_BYTES",
    "Annotation",
    "AnnotationError",
    "annotation_error",
    "forwarded",
    "parse_annotation",
]

ANNOTATIONS_LABEL = "annotations"
MAX_ANNOTATION_BYTES = 16 * 1024

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
ShapeId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Message):
    x: Fraction
    y: Fraction


class Pointer(_Message):
    """Where the sender of this message points, now (not kept: the next one replaces it)."""

    type: Literal["pointer"]
    x: Fraction
    y: Fraction


class Arrow(_Message):
    type: Literal["arrow"]
    id: ShapeId | None = None
    start: Point
    end: Point
    colour: Colour = "#ffcc00"


class Circle(_Message):
    type: Literal["circle"]
    id: ShapeId | None = None
    centre: Point
    radius: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
    colour: Colour = "#ffcc00"


class Text(_Message):
    type: Literal["text"]
    id: ShapeId | None = None
    at: Point
    text: Annotated[str, Field(min_length=1, max_length=200)]
    colour: Colour = "#ffcc00"


class Clear(_Message):
    """Remove one drawing (``id``), or every drawing of its author."""

    type: Literal["clear"]
    id: ShapeId | None = None


class Chat(_Message):
    type: Literal["chat"]
    text: Annotated[str, Field(min_length=1, max_length=2000)]


Annotation = Annotated[Pointer | Arrow | Circle | Text | Clear | Chat, Field(discriminator="type")]
_ANNOTATION: TypeAdapter[Pointer | Arrow | Circle | Text | Clear | Chat] = TypeAdapter(Annotation)


class AnnotationError(ValueError):
    """A data-channel message that is not an annotation; the sentence says what is wrong."""


def parse_annotation(message: str | bytes) -> Pointer | Arrow | Circle | Text | Clear | Chat:
    """The annotation in ``message``, or ``AnnotationError`` naming what is wrong with it."""
    if isinstance(message, bytes):
        raise AnnotationError("annotations are JSON text messages, not binary ones")
    if len(message) > MAX_ANNOTATION_BYTES:
        raise AnnotationError(f"an annotation is at most {MAX_ANNOTATION_BYTES} bytes")
    try:
        return _ANNOTATION.validate_json(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "message"
        raise AnnotationError(f"{where}: {first.get('msg', 'invalid')}") from None


def forwarded(
    annotation: Pointer | Arrow | Circle | Text | Clear | Chat, *, username: str, role: str, time: datetime
) -> str:
    """The JSON text other participants receive: the annotation plus who sent it and when."""
    body: dict[str, Any] = annotation.model_dump(mode="json", exclude_none=True)
    body["from"] = {"username": username, "role": role}
    body["time"] = time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(body, ensure_ascii=False)


def annotation_error(detail: str) -> str:
    """The reply on the channel to a message that was not forwarded."""
    return json.dumps({"type": "error", "code": "invalid-annotation", "detail": detail}, ensure_ascii=False)
