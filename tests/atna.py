"""A structural check of DICOM PS3.15 A.5.1 audit messages (the RFC 3881 based schema).

No schema validator is installed (lxml is not a dependency), so this walks
the element tree against the schema's rules: which elements, in which order,
how many, and which attributes each must carry with which values.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import datetime

__all__ = ["assert_audit_message", "coded"]

_OUTCOMES = {"0", "4", "8", "12"}
_ACTIONS = {"C", "R", "U", "D", "E"}


def coded(element: ET.Element) -> tuple[str, str, str]:
    """(csd-code, codeSystemName, originalText) of a CodedValueType, each required and non-empty."""
    values = tuple(element.get(name) or "" for name in ("csd-code", "codeSystemName", "originalText"))
    assert all(values), f"{element.tag} lacks csd-code, codeSystemName or originalText: {element.attrib}"
    return values  # type: ignore[return-value]


def _tags_in_order(parent: ET.Element, order: list[str]) -> None:
    ranks = [order.index(child.tag) if child.tag in order else -1 for child in parent]
    assert -1 not in ranks, f"unexpected element in {parent.tag}: {[child.tag for child in parent]}"
    assert ranks == sorted(ranks), f"elements of {parent.tag} out of order: {[child.tag for child in parent]}"


def assert_audit_message(message: ET.Element) -> None:
    """Fail unless ``message`` is an AuditMessage as PS3.15 A.5.1 defines it."""
    assert message.tag == "AuditMessage"
    _tags_in_order(
        message,
        [
            "EventIdentification",
            "ActiveParticipant",
            "AuditSourceIdentification",
            "ParticipantObjectIdentification",
        ],
    )
    assert len(message.findall("EventIdentification")) == 1
    assert len(message.findall("ActiveParticipant")) >= 1
    assert len(message.findall("AuditSourceIdentification")) == 1

    event = message.find("EventIdentification")
    assert event is not None
    datetime.fromisoformat(event.get("EventDateTime") or "")  # xsd:dateTime
    assert event.get("EventOutcomeIndicator") in _OUTCOMES
    assert event.get("EventActionCode", "E") in _ACTIONS
    _tags_in_order(event, ["EventID", "EventTypeCode", "EventOutcomeDescription", "PurposeOfUse"])
    event_ids = event.findall("EventID")
    assert len(event_ids) == 1
    coded(event_ids[0])
    for type_code in event.findall("EventTypeCode"):
        coded(type_code)

    for participant in message.findall("ActiveParticipant"):
        assert participant.get("UserID"), participant.attrib
        assert participant.get("UserIsRequestor") in ("true", "false"), participant.attrib
        assert participant.get("NetworkAccessPointTypeCode", "1") in {"1", "2", "3", "4", "5"}
        _tags_in_order(participant, ["RoleIDCode", "MediaIdentifier"])
        for role in participant.findall("RoleIDCode"):
            coded(role)

    source = message.find("AuditSourceIdentification")
    assert source is not None
    assert source.get("AuditSourceID")
    _tags_in_order(source, ["AuditSourceTypeCode"])
    for type_code in source.findall("AuditSourceTypeCode"):
        coded(type_code)

    for obj in message.findall("ParticipantObjectIdentification"):
        assert obj.get("ParticipantObjectID"), obj.attrib
        assert obj.get("ParticipantObjectTypeCode") in {"1", "2", "3", "4"}, obj.attrib
        assert obj.get("ParticipantObjectTypeCodeRole"), obj.attrib
        _tags_in_order(
            obj,
            [
                "ParticipantObjectIDTypeCode",
                "ParticipantObjectName",
                "ParticipantObjectQuery",
                "ParticipantObjectDetail",
                "ParticipantObjectDescription",
            ],
        )
        id_types = obj.findall("ParticipantObjectIDTypeCode")
        assert len(id_types) == 1
        coded(id_types[0])
        # A name or a query, not both (a choice in the schema).
        assert len(obj.findall("ParticipantObjectName")) + len(obj.findall("ParticipantObjectQuery")) <= 1
        for query in obj.findall("ParticipantObjectQuery"):
            base64.b64decode(query.text or "", validate=True)
