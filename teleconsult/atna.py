"""Audit events as DICOM PS3.15 Annex A audit messages (IHE ATNA, RFC 3881 schema).

A hospital's audit record repository (ARR) speaks this format, not our
table; this module maps each row of the audit trail to one ``AuditMessage``
(PS3.15 A.5.1). Messages are built with ElementTree, so values are always
escaped, whatever a peer put in an AE title or a query.

An export is one XML document whose root ``AuditMessages`` wraps the
messages in chain order. The wrapper is ours (the schema defines one message
per document, as syslog carries them); every child is a complete
``AuditMessage`` that can be sent on as is.

Mapping of our actions (``AuditEvent.action``) to event IDs (DCM codes):

=============================================  =======================================  ======
action                                         EventID                                  Action
=============================================  =======================================  ======
``login``, ``logout``                          110114 User Authentication (+ type code) E
``association`` (DICOM association refused)    110114 User Authentication, 110122 Login E
``access`` without a signed-in user (401)      110114 User Authentication, 110122 Login E
``access`` on DICOMweb (403)                   110103 DICOM Instances Accessed          R
``access`` elsewhere (403)                     110110 Patient Record                    R
``query``, ``*.search``                        110112 Query                             E
``retrieve`` (C-MOVE, C-GET)                   110104 DICOM Instances Transferred       R
``instance.store`` (C-STORE received)          110104 DICOM Instances Transferred       C
``*.import``, ``stow``                         110107 Import                            C
``*.export`` (not the audit log), ``wado``     110106 Export                            R
``audit.*`` (reading the audit trail)          110101 Audit Log Used                    R
``instance.*``, ``study.*``, ``series.*``      110103 DICOM Instances Accessed          by verb
anything else                                  110110 Patient Record                    by verb
=============================================  =======================================  ======

"by verb": ``.create`` C, ``.read`` R, ``.update`` U, ``.delete`` D, else E.
Outcomes: success 0, denied 4 (minor failure), failure 8 (serious failure).
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["EventCode", "audit_message", "audit_messages_document", "event_code", "write_audit_messages"]

_OUTCOME_INDICATOR = {"success": "0", "denied": "4", "failure": "8"}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# dicom_gateway.audit writes the studies of a multi-study retrieve this way.
_STUDIES = re.compile(r"studies=([0-9.,]+)")
_IPV4 = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value (csd-code, codeSystemName, originalText), PS3.15 A.5.1 CodedValueType."""

    code: str
    scheme: str
    meaning: str


@dataclass(frozen=True, slots=True)
class EventCode:
    event_id: Code
    action: str  # EventActionCode: C R U D E
    event_type: Code | None = None


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


USER_AUTHENTICATION = _dcm("110114", "User Authentication")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
QUERY = _dcm("110112", "Query")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
EXPORT = _dcm("110106", "Export")
IMPORT = _dcm("110107", "Import")
PATIENT_RECORD = _dcm("110110", "Patient Record")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")

_APPLICATION = _dcm("110150", "Application")
_SOURCE_ROLE = _dcm("110153", "Source Role ID")
_APPLICATION_SERVER = Code("4", "DCM", "Application Server Process tier in a multi-tier system")
_PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
_URI = Code("12", "RFC-3881", "URI")
_STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
_SOP_CLASS_UID = _dcm("110181", "SOP Class UID")

_VERBS = {"create": "C", "read": "R", "update": "U", "delete": "D"}
_HTTP_VERBS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}


def _verb(action: str) -> str:
    return _VERBS.get(action.rsplit(".", 1)[-1], "E")


def event_code(row: Mapping[str, Any]) -> EventCode:
    """The EventID, EventActionCode and EventTypeCode of one audit row (table above)."""
    action: str = row["action"]
    interface: str = row["interface"]
    if action == "login":
        return EventCode(USER_AUTHENTICATION, "E", LOGIN)
    if action == "logout":
        return EventCode(USER_AUTHENTICATION, "E", LOGOUT)
    if action == "association" or (action == "access" and not row.get("role")):
        return EventCode(USER_AUTHENTICATION, "E", LOGIN)
    if action == "access":
        method = str(row.get("resource") or "").split(" ", 1)[0]
        target = INSTANCES_ACCESSED if interface == "dicomweb" else PATIENT_RECORD
        return EventCode(target, _HTTP_VERBS.get(method, "R"))
    if action.startswith("audit."):
        return EventCode(AUDIT_LOG_USED, "R")
    if action == "query" or action.endswith(".search"):
        return EventCode(QUERY, "E")
    if action == "retrieve":
        return EventCode(INSTANCES_TRANSFERRED, "R")
    if action == "instance.store":
        return EventCode(INSTANCES_TRANSFERRED, "C")
    if action == "stow" or action.endswith(".import"):
        return EventCode(IMPORT, "C")
    if action == "wado" or action.endswith(".export"):
        return EventCode(EXPORT, "R")
    if action.split(".", 1)[0] in ("instance", "study", "series"):
        return EventCode(INSTANCES_ACCESSED, _verb(action))
    return EventCode(PATIENT_RECORD, _verb(action))


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent,
        tag,
        {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning},
    )


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.isoformat()
    return str(value)


def _study_uids(row: Mapping[str, Any]) -> list[str]:
    uids: list[str] = []
    if row.get("study_instance_uid"):
        uids.append(str(row["study_instance_uid"]))
    match = _STUDIES.search(str(row.get("detail") or ""))
    if match:
        uids += [uid for uid in match.group(1).split(",") if _UID.match(uid)]
    return list(dict.fromkeys(uids))


def _sop_class(resource: str) -> str | None:
    """The SOP Class UID our DICOM rows put last in ``resource`` ("C-FIND STUDY 1.2.840...")."""
    last = resource.rsplit(" ", 1)[-1]
    return last if _UID.match(last) and "." in last else None


def audit_message(row: Mapping[str, Any], *, source_id: str) -> ET.Element:
    """One AuditMessage (PS3.15 A.5.1) for one row of the audit trail.

    ``source_id`` names this system in AuditSourceIdentification and in the
    non-requesting ActiveParticipant (our AE title).
    """
    code = event_code(row)
    outcome = str(row["outcome"])
    message = ET.Element("AuditMessage")
    event = ET.SubElement(
        message,
        "EventIdentification",
        {
            "EventActionCode": code.action,
            "EventDateTime": _time(row["time"]),
            "EventOutcomeIndicator": _OUTCOME_INDICATOR.get(outcome, "8"),
        },
    )
    _coded(event, "EventID", code.event_id)
    if code.event_type is not None:
        _coded(event, "EventTypeCode", code.event_type)
    if outcome != "success" and row.get("detail"):
        ET.SubElement(event, "EventOutcomeDescription").text = str(row["detail"])

    dicom = row["interface"] == "dicom"
    user = ET.SubElement(message, "ActiveParticipant", {"UserID": str(row["actor"])})
    if dicom:
        user.set("AlternativeUserID", f"AETITLES={row['actor']}")
    user.set("UserIsRequestor", "true")
    if row.get("source_address"):
        address = str(row["source_address"])
        user.set("NetworkAccessPointID", address)
        user.set("NetworkAccessPointTypeCode", "2" if _IPV4.match(address) or ":" in address else "1")
    if dicom:
        _coded(user, "RoleIDCode", _SOURCE_ROLE)
    elif row.get("role"):
        _coded(user, "RoleIDCode", Code(str(row["role"]), "teleconsult-role", str(row["role"])))
    application = ET.SubElement(
        message,
        "ActiveParticipant",
        {"UserID": source_id, "AlternativeUserID": f"AETITLES={source_id}", "UserIsRequestor": "false"},
    )
    _coded(application, "RoleIDCode", _APPLICATION)

    source = ET.SubElement(message, "AuditSourceIdentification", {"AuditSourceID": source_id})
    _coded(source, "AuditSourceTypeCode", _APPLICATION_SERVER)

    if row.get("patient_id"):
        patient = ET.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": str(row["patient_id"]),
                "ParticipantObjectTypeCode": "1",  # person
                "ParticipantObjectTypeCodeRole": "1",  # patient
            },
        )
        _coded(patient, "ParticipantObjectIDTypeCode", _PATIENT_NUMBER)
    for uid in _study_uids(row):
        study = ET.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": uid,
                "ParticipantObjectTypeCode": "2",  # system object
                "ParticipantObjectTypeCodeRole": "3",  # report
            },
        )
        _coded(study, "ParticipantObjectIDTypeCode", _STUDY_INSTANCE_UID)
    resource = str(row.get("resource") or "")
    if code.event_id == QUERY:
        # PS3.15 A.5.3.12: the query itself, its SOP class and its keys.
        sop_class = _sop_class(resource)
        query = ET.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": sop_class or resource,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "3",
            },
        )
        _coded(query, "ParticipantObjectIDTypeCode", _SOP_CLASS_UID if sop_class else _URI)
        ET.SubElement(query, "ParticipantObjectQuery").text = base64.b64encode(
            str(row.get("detail") or "").encode("utf-8")
        ).decode("ascii")
    elif code.event_id == AUDIT_LOG_USED:
        log = ET.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": resource,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "13",  # security resource
            },
        )
        _coded(log, "ParticipantObjectIDTypeCode", _URI)
        ET.SubElement(log, "ParticipantObjectName").text = "Security Audit Log"
    return message


def audit_messages_document(rows: Iterable[Mapping[str, Any]], *, source_id: str) -> bytes:
    """One ``AuditMessages`` document (UTF-8, with XML declaration) holding a message per row."""
    root = ET.Element("AuditMessages")
    for row in rows:
        root.append(audit_message(row, source_id=source_id))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_audit_messages(rows: Iterable[Mapping[str, Any]], out: TextIO, *, source_id: str) -> int:
    """Stream the same document to ``out`` a message at a time; returns the number written.

    Non-ASCII characters are written as character references, so the
    document is right whatever encoding ``out`` (a terminal, a pipe) has.
    """
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessages>\n')
    count = 0
    for row in rows:
        out.write(ET.tostring(audit_message(row, source_id=source_id), encoding="us-ascii").decode("ascii"))
        out.write("\n")
        count += 1
    out.write("</AuditMessages>\n")
    return count
