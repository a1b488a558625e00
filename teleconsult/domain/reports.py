"""Reports of consults: versions, co-signatures, and exactly what a signature covers.

A report is a list of versions, never changed once written: each saved
draft is a new version, and after the report is final (a reviewing
signature) only signed addenda are added. Its state follows from the
versions and signatures alone:

- ``draft``: the newest version has no signature;
- ``preliminary``: the newest version has the performing (township) signature;
- ``final``: a reviewing (county specialist) signature exists;
- ``amended``: final, with one or more signed addenda.

What is signed (``signature_payload``) is a JSON object serialised by RFC
8785: the consult id, the study and patient identifiers, the version with
its whole content, the signer, role, time and key, and what the signature
refers to (the performing signature a reviewing one co-signs, or the
version an addendum amends). Verification rebuilds it from the stored rows,
so a change to any of them makes the signature fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from teleconsult.domain.signing import canonical_json, digest

__all__ = [
    "PAYLOAD_FORMAT",
    "Report",
    "ReportSignature",
    "ReportStatus",
    "ReportVersion",
    "SignatureRole",
    "SignedSubject",
    "VersionKind",
    "content_digest",
    "format_time",
    "signature_payload",
    "signing_time",
]

PAYLOAD_FORMAT = "teleconsult-report-signature/1"


class SignatureRole(StrEnum):
    PERFORMING = "performing"  # the township author who performed the exam
    REVIEWING = "reviewing"  # the county specialist; makes the report final


class VersionKind(StrEnum):
    REPORT = "report"
    ADDENDUM = "addendum"


class ReportStatus(StrEnum):
    DRAFT = "draft"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"


def signing_time(now: datetime) -> datetime:
    """``now`` in UTC to the millisecond: what both databases store and give back exactly."""
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_time(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as in signed payloads."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def content_digest(content: Mapping[str, Any]) -> str:
    return digest(canonical_json(dict(content)))


@dataclass(frozen=True, slots=True)
class ReportVersion:
    version: int
    kind: VersionKind
    template: str
    # report: {"findings": {...}, "impression": "..."}; addendum: {"text": "...", "reason": "..."}
    content: Mapping[str, Any]
    content_sha256: str
    author: str
    author_organisation: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ReportSignature:
    version: int
    role: SignatureRole
    signer: str
    signer_name: str
    signer_organisation: str
    signed_at: datetime
    algorithm: str
    key_fingerprint: str
    signature: str
    payload_sha256: str
    refers_to_version: int | None


@dataclass(frozen=True, slots=True)
class SignedSubject:
    """The consult and study a report belongs to, as its signatures name them."""

    consult_id: str
    study_instance_uid: str | None
    patient_id: str
    issuer_of_patient_id: str


@dataclass(frozen=True, slots=True)
class Report:
    consult_id: str
    versions: tuple[ReportVersion, ...]
    signatures: tuple[ReportSignature, ...]

    @property
    def current(self) -> ReportVersion:
        return self.versions[-1]

    def version(self, number: int) -> ReportVersion | None:
        return next((v for v in self.versions if v.version == number), None)

    def signatures_of(self, number: int) -> list[ReportSignature]:
        return [s for s in self.signatures if s.version == number]

    def signature(self, number: int, role: SignatureRole) -> ReportSignature | None:
        return next((s for s in self.signatures if s.version == number and s.role is role), None)

    @property
    def final_signature(self) -> ReportSignature | None:
        """The reviewing signature that made the report final (addenda are signed in that role too)."""
        for signature in self.signatures:
            version = self.version(signature.version)
            if signature.role is SignatureRole.REVIEWING and version and version.kind is VersionKind.REPORT:
                return signature
        return None

    @property
    def final_version(self) -> ReportVersion | None:
        signature = self.final_signature
        return None if signature is None else self.version(signature.version)

    @property
    def addenda(self) -> list[ReportVersion]:
        return [v for v in self.versions if v.kind is VersionKind.ADDENDUM]

    @property
    def latest_performing(self) -> ReportSignature | None:
        """The newest performing signature: the one a reviewing signature co-signs."""
        performing = [s for s in self.signatures if s.role is SignatureRole.PERFORMING]
        return max(performing, key=lambda s: (s.version, s.signed_at)) if performing else None

    @property
    def status(self) -> ReportStatus:
        if self.final_signature is not None:
            return ReportStatus.AMENDED if self.addenda else ReportStatus.FINAL
        if self.signature(self.current.version, SignatureRole.PERFORMING) is not None:
            return ReportStatus.PRELIMINARY
        return ReportStatus.DRAFT

    def reference_of(self, signature: ReportSignature) -> dict[str, Any] | None:
        """What ``signature`` refers to, as its payload names it (None: nothing)."""
        if signature.refers_to_version is None:
            return None
        version = self.version(signature.version)
        if version is not None and version.kind is VersionKind.ADDENDUM:
            amended = self.version(signature.refers_to_version)
            return {
                "amends_version": signature.refers_to_version,
                "amends_content_sha256": amended.content_sha256 if amended else None,
            }
        performing = self.signature(signature.refers_to_version, SignatureRole.PERFORMING)
        return {
            "performing_version": signature.refers_to_version,
            "performing_signer": performing.signer if performing else None,
            "performing_signature": performing.signature if performing else None,
        }


def signature_payload(
    subject: SignedSubject,
    version: ReportVersion,
    *,
    role: SignatureRole,
    signer: str,
    signer_name: str,
    signer_organisation: str,
    signed_at: datetime,
    algorithm: str,
    key_fingerprint: str,
    reference: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The object a signature covers; ``canonical_json`` of it is what is signed."""
    return {
        "format": PAYLOAD_FORMAT,
        "consult_id": subject.consult_id,
        "study_instance_uid": subject.study_instance_uid,
        "patient": {"id": subject.patient_id, "issuer": subject.issuer_of_patient_id},
        "report": {
            "version": version.version,
            "kind": version.kind.value,
            "template": version.template,
            "content": dict(version.content),
            "content_sha256": version.content_sha256,
            "author": version.author,
            "author_organisation": version.author_organisation,
            "created_at": format_time(version.created_at),
        },
        "signature": {
            "role": role.value,
            "signer": signer,
            "signer_name": signer_name,
            "signer_organisation": signer_organisation,
            "signed_at": format_time(signed_at),
            "algorithm": algorithm,
            "key_fingerprint": key_fingerprint,
        },
        "refers_to": dict(reference) if reference is not None else None,
    }
