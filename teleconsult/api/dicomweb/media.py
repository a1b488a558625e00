"""Media types of DICOMweb (PS3.18 8.7): parsing Accept and Content-Type, and negotiating.

Each resource accepts a few representations; a client lists what it
accepts, possibly several ranges with q-values and a ``transfer-syntax``
parameter inside a ``multipart/related`` range. Negotiation here turns that
into the one decision a route needs, or raises ``NotAcceptableError`` (406)
naming what the resource can produce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from teleconsult.api.dicomweb.errors import NotAcceptableError

__all__ = [
    "ANY_TRANSFER_SYNTAX",
    "DICOM",
    "DICOM_JSON",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "MULTIPART_RELATED",
    "OCTET_STREAM",
    "BulkForm",
    "MediaRange",
    "negotiate_dicom",
    "negotiate_image",
    "negotiate_json",
    "negotiate_octet_stream",
    "parse_content_type",
    "parse_media_ranges",
]

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ANY_TRANSFER_SYNTAX = "*"

_MEDIA_TYPE = re.compile(r"\s*([^\s;,]+)")
_PARAMETER = re.compile(r"\s*;\s*([^\s;,=]+)\s*(?:=\s*(\"(?:[^\"\\]|\\.)*\"|[^;,]*))?")
_SEPARATOR = re.compile(r"\s*,")


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One media range of an Accept header, or a Content-Type, lower-cased, parameters unquoted."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        """Whether this range (which may hold wildcards) covers the concrete ``media_type``."""
        if self.type in ("*/*", media_type):
            return True
        major, _, minor = self.type.partition("/")
        return minor == "*" and media_type.startswith(major + "/")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_one(text: str, position: int) -> tuple[MediaRange | None, int]:
    match = _MEDIA_TYPE.match(text, position)
    if match is None:
        return None, len(text)
    media_type = match.group(1).lower()
    position = match.end()
    params: dict[str, str] = {}
    while (param := _PARAMETER.match(text, position)) is not None:
        params[param.group(1).lower()] = _unquote(param.group(2) or "")
        position = param.end()
    q = 1.0
    if "q" in params:
        try:
            q = float(params.pop("q"))
        except ValueError:
            q = 0.0
    return MediaRange(media_type, params, q), position


def parse_media_ranges(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, most preferred first (q-value, then order); q=0 dropped.

    An absent or empty header is ``*/*``, as RFC 9110 12.5.1 says.
    """
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    position = 0
    while position < len(header):
        media_range, position = _parse_one(header, position)
        if media_range is not None and "/" in media_range.type and media_range.q > 0:
            ranges.append(media_range)
        separator = _SEPARATOR.match(header, position)
        if separator is None:
            # Skip whatever is unparsable up to the next comma.
            next_comma = header.find(",", position)
            position = len(header) if next_comma < 0 else next_comma + 1
        else:
            position = separator.end()
    return sorted(ranges, key=lambda r: -r.q)


def parse_content_type(header: str | None) -> MediaRange | None:
    """A Content-Type header, or ``None`` when absent."""
    if not header or not header.strip():
        return None
    media_range, _ = _parse_one(header, 0)
    return media_range


def _part_type(media_range: MediaRange) -> str | None:
    """The part media type a range asks for: ``type`` of multipart/related, ``*/*`` for wildcards."""
    if media_range.type == MULTIPART_RELATED:
        return media_range.params.get("type", "*/*").lower()
    if media_range.type in ("*/*", "multipart/*"):
        return "*/*"
    return None


def negotiate_dicom(header: str | None) -> list[str]:
    """Transfer syntaxes acceptable for ``multipart/related; type="application/dicom"``, in preference order.

    ``"*"`` means "as stored" (also what a range without ``transfer-syntax``
    gets: teleconsult sends instances as stored unless asked otherwise).
    """
    preferences: list[str] = []
    for media_range in parse_media_ranges(header):
        part = _part_type(media_range)
        if part is None or not MediaRange(part).matches(DICOM):
            continue
        preferences.append(media_range.params.get("transfer-syntax", ANY_TRANSFER_SYNTAX).strip())
    if not preferences:
        raise NotAcceptableError(
            f'this resource is available as {MULTIPART_RELATED}; type="{DICOM}" only; '
            f"the Accept header was {header!r}"
        )
    return preferences


class BulkForm(StrEnum):
    MULTIPART = "multipart"  # multipart/related; type="application/octet-stream"
    SINGLE = "single"  # a plain application/octet-stream body


def negotiate_octet_stream(header: str | None, *, single_allowed: bool) -> BulkForm:
    """Uncompressed frames or bulk data: ``multipart/related; type="application/octet-stream"``.

    Only Explicit VR Little Endian (native, uncompressed) bytes are produced,
    so a range asking for another ``transfer-syntax`` is not acceptable.
    """
    for media_range in parse_media_ranges(header):
        syntax = media_range.params.get("transfer-syntax", ANY_TRANSFER_SYNTAX).strip()
        if syntax not in (ANY_TRANSFER_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN):
            continue
        if single_allowed and media_range.type == OCTET_STREAM:
            return BulkForm.SINGLE
        part = _part_type(media_range)
        if part is not None and MediaRange(part).matches(OCTET_STREAM):
            return BulkForm.MULTIPART
    raise NotAcceptableError(
        f'this resource is available as {MULTIPART_RELATED}; type="{OCTET_STREAM}" '
        f"(uncompressed, transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}) only; the Accept header was {header!r}"
    )


def negotiate_json(header: str | None) -> str:
    """``application/dicom+json`` (also served for ``application/json`` and wildcards)."""
    for media_range in parse_media_ranges(header):
        if media_range.matches(DICOM_JSON) or media_range.type == "application/json":
            return DICOM_JSON
    raise NotAcceptableError(
        f"this resource is available as {DICOM_JSON} only; the Accept header was {header!r}"
    )


_IMAGE_TYPES = ("image/jpeg", "image/png")


def negotiate_image(header: str | None, accept_parameter: str | None = None) -> str:
    """``image/jpeg`` (the default) or ``image/png``; the ``accept`` query parameter wins over the header."""
    source = accept_parameter if accept_parameter else header
    for media_range in parse_media_ranges(source):
        for media_type in _IMAGE_TYPES:
            if media_range.matches(media_type):
                return media_type
    raise NotAcceptableError(
        f"rendered images are available as {' or '.join(_IMAGE_TYPES)}; {source!r} was asked for"
    )
