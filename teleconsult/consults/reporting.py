"""Report use cases: drafts, performing and reviewing signatures, signed addenda, version history.

Who writes and who signs:

- Before the specialist takes it into review, a sonographer or doctor of the
  requesting side may write the preliminary draft; the assigned specialist
  writes from acceptance until the report is final. Each save is a new
  version (an unchanged save adds none).
- The **performing** signature is a requesting-side sonographer's or
  doctor's, on the newest version; the **reviewing** signature is the
  assigned specialist's and makes the report final. It co-signs the newest
  performing signature (its payload carries that signature's value), which
  may be on an earlier version when the specialist edited the preliminary
  draft. With ``TELECONSULT_CONSULT_REQUIRE_PERFORMING_SIGNATURE`` (default
  on) there must be one.
- A final report never changes: the assigned specialist adds signed addenda,
  each a new version chained to the one before.

Keys are fetched before the transaction opens: making a user's first key
writes through another connection, which on SQLite would wait for the
transaction holding the write lock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from teleconsult.consults.service import ConsultService, Locked, consult_event
from teleconsult.domain.consults import (
    CLOSED,
    Consult,
    ConsultAction,
    ConsultStatus,
    HistoryEntry,
    is_requesting_side,
    next_status,
)
from teleconsult.domain.identity import Principal, Role
from teleconsult.domain.report_templates import MAX_IMPRESSION, MAX_TEXT, get_template
from teleconsult.domain.reports import (
    Report,
    ReportSignature,
    ReportVersion,
    SignatureRole,
    SignedSubject,
    VersionKind,
    content_digest,
    format_time,
    signature_payload,
)
from teleconsult.domain.signing import canonical_json, digest, fingerprint, sign, verify
from teleconsult.errors import (
    AlreadySignedError,
    ConflictError,
    ConsultStateError,
    InvalidReportError,
    NotFoundError,
    PermissionDeniedError,
    ReportSignedError,
)
from teleconsult.events import EventType
from teleconsult.storage.signing_keys import SigningKey, SigningKeyStore
from teleconsult.storage.transactions import writing

__all__ = ["ReportService", "SignatureCheck", "Verification"]

logger = logging.getLogger(__name__)

_PERFORMERS = (Role.SONOGRAPHER, Role.TOWNSHIP_DOCTOR)
_EARLY = (ConsultStatus.REQUESTED, ConsultStatus.ACCEPTED)
_SPECIALIST_WRITES = (ConsultStatus.ACCEPTED, ConsultStatus.IN_REVIEW, ConsultStatus.REPORTED)


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    signature: ReportSignature
    valid: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Verification:
    consult_id: str
    valid: bool
    final: bool
    checked_at: datetime
    signatures: tuple[SignatureCheck, ...]


def subject_of(consult: Consult) -> SignedSubject:
    return SignedSubject(
        consult_id=consult.consult_id,
        study_instance_uid=consult.study_instance_uid,
        patient_id=consult.patient_id,
        issuer_of_patient_id=consult.issuer_of_patient_id,
    )


class ReportService:
    def __init__(self, consults: ConsultService, secret_key: str) -> None:
        self.consults = consults
        self.store = consults.reports
        self.keys = SigningKeyStore(consults.engine, secret_key)

    # -- reading -------------------------------------------------------------------

    def report(self, principal: Principal, consult_id: str) -> tuple[Consult, Report]:
        consult = self.consults.get(principal, consult_id)
        report = self.store.report(consult.consult_id)
        if report is None:
            raise NotFoundError(f"consult {consult_id} has no report yet; save a draft with PUT .../report")
        return consult, report

    def final_report(self, consult_id: str) -> tuple[Consult, Report]:
        """The consult and its final report, whoever asks: what the output stage (PDF, SR, FHIR) reads."""
        consult = self.consults.store.get(consult_id)
        report = self.store.report(consult_id) if consult else None
        if consult is None or report is None or report.final_signature is None:
            raise NotFoundError(f"consult {consult_id} has no final report")
        return consult, report

    # -- writing -------------------------------------------------------------------

    def save_draft(
        self,
        principal: Principal,
        consult_id: str,
        *,
        template: str,
        findings: Mapping[str, Any],
        impression: str,
        base_version: int | None = None,
    ) -> tuple[Consult, Report]:
        """Save the draft as a new version (none if nothing changed)."""
        checked_template = get_template(template)
        content = {
            "findings": checked_template.check_findings(findings),
            "impression": _text(impression, "impression", MAX_IMPRESSION),
        }
        now = self.consults.now()
        with writing(self.consults.engine) as conn:
            locked = self.consults.lock(conn, consult_id, principal)
            consult = locked.consult
            report = self.store.load(conn, locked.pk, consult_id)
            _refuse_if_final(consult_id, report)
            if consult.status in CLOSED:
                raise ConsultStateError(
                    f"consult {consult_id} is {consult.status.value}; its report is closed"
                )
            specialist = self._writer_side(locked)
            newest = report.current.version if report else 0
            if base_version is not None and base_version != newest:
                raise ConflictError(
                    f"the newest version of the report of consult {consult_id} is {newest}, "
                    f"not {base_version}: "
                    "reload it and apply your changes to that version"
                )
            unchanged = (
                report is not None
                and report.current.template == checked_template.code
                and report.current.content == content
            )
            if not unchanged:
                self.store.add_version(
                    conn,
                    locked.pk,
                    ReportVersion(
                        version=newest + 1,
                        kind=VersionKind.REPORT,
                        template=checked_template.code,
                        content=content,
                        content_sha256=content_digest(content),
                        author=principal.username,
                        author_organisation=principal.organisation,
                        created_at=now,
                    ),
                )
            if specialist and consult.status is ConsultStatus.ACCEPTED:
                self._move(
                    conn, locked, ConsultAction.START_REVIEW, ConsultStatus.IN_REVIEW, principal.username, now
                )
            report = self.store.load(conn, locked.pk, consult_id)
        assert report is not None
        return self.consults.get(principal, consult_id), report

    def submit(self, principal: Principal, consult_id: str) -> Consult:
        """The specialist declares the report complete: ``reported``, waiting for signatures."""
        now = self.consults.now()
        with writing(self.consults.engine) as conn:
            locked = self.consults.lock(conn, consult_id, principal)
            consult = locked.consult
            report = self.store.load(conn, locked.pk, consult_id)
            _refuse_if_final(consult_id, report)
            _check_assignee(locked, "submit the report of")
            if report is None:
                raise ConsultStateError(f"consult {consult_id} has no report to submit; save a draft first")
            if consult.status is not ConsultStatus.IN_REVIEW:
                raise ConsultStateError(
                    f"consult {consult_id} is {consult.status.value}; a report is submitted from in_review"
                )
            _check_complete(consult_id, report.current)
            self._move(conn, locked, ConsultAction.SUBMIT, ConsultStatus.REPORTED, principal.username, now)
        changed = self.consults.get(principal, consult_id)
        self.consults.bus.publish(consult_event(EventType.CONSULT_REPORTED, changed, principal.username))
        return changed

    def sign(
        self, principal: Principal, consult_id: str, role: SignatureRole | str | None = None
    ) -> tuple[Consult, Report, ReportSignature]:
        """Sign the newest version as the caller: performing (township) or reviewing (specialist, final)."""
        role = _signing_role(principal, role)
        self.consults.get(principal, consult_id)  # 404 before a key is made for a stranger
        key = self.keys.key_for(principal.username)
        user = self.consults.identity.user(principal.username)
        signer_name = (user.display_name if user else "") or principal.username
        now = self.consults.now()
        with writing(self.consults.engine) as conn:
            locked = self.consults.lock(conn, consult_id, principal)
            consult = locked.consult
            report = self.store.load(conn, locked.pk, consult_id)
            final = report.final_signature if report else None
            if final is not None:
                raise AlreadySignedError(
                    f"the report of consult {consult_id} was signed as final by {final.signer} at "
                    f"{format_time(final.signed_at)}; it is not signed again: "
                    "add a signed addendum to change it"
                )
            if consult.status in CLOSED:
                raise ConsultStateError(
                    f"consult {consult_id} is {consult.status.value}; its report is closed"
                )
            if role is SignatureRole.PERFORMING:
                self._check_performer(locked)
            else:
                _check_assignee(locked, "sign as reviewing physician the report of")
            if report is None:
                raise ConsultStateError(f"consult {consult_id} has no report to sign; save a draft first")
            version = report.current
            existing = report.signature(version.version, role)
            if existing is not None:
                raise AlreadySignedError(
                    f"version {version.version} of the report of consult {consult_id} was signed as "
                    f"{role.value} by {existing.signer} at {format_time(existing.signed_at)}"
                )
            reference: dict[str, Any] | None = None
            refers_to: int | None = None
            if role is SignatureRole.REVIEWING:
                next_status(consult_id, consult.status, ConsultAction.SIGN)
                performing = report.latest_performing
                if performing is None and self.consults.settings.consult_require_performing_signature:
                    raise ConsultStateError(
                        f"the report of consult {consult_id} needs the performing signature of the "
                        "township sonographer or doctor before the reviewing one"
                    )
                if performing is not None:
                    refers_to = performing.version
                    reference = {
                        "performing_version": performing.version,
                        "performing_signer": performing.signer,
                        "performing_signature": performing.signature,
                    }
            _check_complete(consult_id, version)
            signature = _make_signature(
                consult, version, key, role, principal, signer_name, now, reference, refers_to
            )
            self.store.add_signature(conn, locked.pk, consult_id, signature)
            if role is SignatureRole.REVIEWING:
                self._walk_to_signed(conn, locked, principal.username, now)
            report = self.store.load(conn, locked.pk, consult_id)
        assert report is not None
        changed = self.consults.get(principal, consult_id)
        logger.info(
            "report of consult %s version %d signed as %s by %s with key %s",
            consult_id,
            signature.version,
            role.value,
            principal.username,
            key.fingerprint,
        )
        event = (
            EventType.REPORT_SIGNED if role is SignatureRole.REVIEWING else EventType.REPORT_PERFORMING_SIGNED
        )
        self.consults.bus.publish(
            consult_event(
                event,
                changed,
                principal.username,
                version=signature.version,
                role=role.value,
                kind=VersionKind.REPORT.value,
                final=role is SignatureRole.REVIEWING,
            )
        )
        return changed, report, signature

    def add_addendum(
        self, principal: Principal, consult_id: str, *, text: str, reason: str
    ) -> tuple[Consult, Report, ReportSignature]:
        """A signed addendum to a final report: a new version, signed at once by the specialist."""
        if principal.role is not Role.SPECIALIST:
            raise PermissionDeniedError(
                f"addenda are written and signed by the reviewing specialist; {principal.username} is "
                f"{principal.role.value}"
            )
        content = {
            "text": _text(text, "text", MAX_TEXT, required=True),
            "reason": _text(reason, "reason", 1024),
        }
        self.consults.get(principal, consult_id)
        key = self.keys.key_for(principal.username)
        user = self.consults.identity.user(principal.username)
        signer_name = (user.display_name if user else "") or principal.username
        now = self.consults.now()
        with writing(self.consults.engine) as conn:
            locked = self.consults.lock(conn, consult_id, principal)
            report = self.store.load(conn, locked.pk, consult_id)
            if report is None or report.final_signature is None:
                raise ConsultStateError(
                    f"the report of consult {consult_id} is not final; "
                    "change its draft (PUT .../report) instead"
                )
            _check_assignee(locked, "add an addendum to the report of")
            previous = report.current
            version = ReportVersion(
                version=previous.version + 1,
                kind=VersionKind.ADDENDUM,
                template=previous.template,
                content=content,
                content_sha256=content_digest(content),
                author=principal.username,
                author_organisation=principal.organisation,
                created_at=now,
            )
            self.store.add_version(conn, locked.pk, version)
            reference = {"amends_version": previous.version, "amends_content_sha256": previous.content_sha256}
            signature = _make_signature(
                locked.consult,
                version,
                key,
                SignatureRole.REVIEWING,
                principal,
                signer_name,
                now,
                reference,
                previous.version,
            )
            self.store.add_signature(conn, locked.pk, consult_id, signature)
            report = self.store.load(conn, locked.pk, consult_id)
        assert report is not None
        consult = self.consults.get(principal, consult_id)
        self.consults.bus.publish(
            consult_event(
                EventType.REPORT_SIGNED,
                consult,
                principal.username,
                version=version.version,
                role=SignatureRole.REVIEWING.value,
                kind=VersionKind.ADDENDUM.value,
                final=True,
            )
        )
        return consult, report, signature

    # -- verifying -----------------------------------------------------------------

    def verify(self, principal: Principal, consult_id: str) -> Verification:
        consult, report = self.report(principal, consult_id)
        return self.verify_report(consult, report)

    def verify_report(self, consult: Consult, report: Report) -> Verification:
        """Rebuild every signed payload from the stored rows; check each signature with its public key."""
        checks = tuple(self._check(consult, report, signature) for signature in report.signatures)
        return Verification(
            consult_id=consult.consult_id,
            valid=bool(checks) and all(check.valid for check in checks),
            final=report.final_signature is not None,
            checked_at=self.consults.now(),
            signatures=checks,
        )

    def _check(self, consult: Consult, report: Report, signature: ReportSignature) -> SignatureCheck:
        version = report.version(signature.version)
        if version is None:
            return SignatureCheck(signature, False, f"version {signature.version} is missing from the report")
        if content_digest(version.content) != version.content_sha256:
            return SignatureCheck(signature, False, f"the content of version {version.version} was changed")
        public = self.keys.public_key(signature.key_fingerprint)
        if public is None or fingerprint(public) != signature.key_fingerprint:
            return SignatureCheck(signature, False, f"signing key {signature.key_fingerprint} is unknown")
        payload = canonical_json(
            signature_payload(
                subject_of(consult),
                version,
                role=signature.role,
                signer=signature.signer,
                signer_name=signature.signer_name,
                signer_organisation=signature.signer_organisation,
                signed_at=signature.signed_at,
                algorithm=signature.algorithm,
                key_fingerprint=signature.key_fingerprint,
                reference=report.reference_of(signature),
            )
        )
        if not verify(public, signature.signature, payload):
            changed = digest(payload) != signature.payload_sha256
            reason = (
                "the signed data was changed after signing" if changed else "the signature does not verify"
            )
            return SignatureCheck(signature, False, reason)
        return SignatureCheck(signature, True, "valid")

    # -- helpers -------------------------------------------------------------------

    def _writer_side(self, locked: Locked) -> bool:
        """True for the assigned specialist, False for the requesting side; 403/409 for anyone else."""
        consult, viewer = locked.consult, locked.viewer
        assert viewer is not None
        if viewer.username == consult.assignee:
            if consult.status not in _SPECIALIST_WRITES:
                raise ConsultStateError(
                    f"consult {consult.consult_id} is {consult.status.value}; its report cannot be changed"
                )
            return True
        if is_requesting_side(consult, viewer) and viewer.role in _PERFORMERS:
            if consult.status not in _EARLY:
                raise ConsultStateError(
                    f"consult {consult.consult_id} is {consult.status.value}: the specialist is reviewing, "
                    "so the requesting side can no longer change the draft"
                )
            return False
        raise PermissionDeniedError(
            f"the report of consult {consult.consult_id} is written by its assigned specialist, or before "
            "review by a sonographer or doctor of the requesting organisation"
        )

    def _check_performer(self, locked: Locked) -> None:
        viewer = locked.viewer
        assert viewer is not None
        if not is_requesting_side(locked.consult, viewer):
            raise PermissionDeniedError(
                f"the performing signature of consult {locked.consult.consult_id} is given by a "
                f"sonographer or doctor of {locked.consult.source_organisation}"
            )

    def _walk_to_signed(self, conn: Connection, locked: Locked, actor: str, now: datetime) -> None:
        """Record every step from the consult's state to ``signed`` (review and report if skipped)."""
        steps = [
            (ConsultAction.START_REVIEW, ConsultStatus.ACCEPTED, ConsultStatus.IN_REVIEW),
            (ConsultAction.SUBMIT, ConsultStatus.IN_REVIEW, ConsultStatus.REPORTED),
            (ConsultAction.SIGN, ConsultStatus.REPORTED, ConsultStatus.SIGNED),
        ]
        current = locked.consult.status
        for action, from_status, to_status in steps:
            if current is from_status:
                self._move(conn, locked, action, to_status, actor, now, from_status=from_status)
                current = to_status

    def _move(
        self,
        conn: Connection,
        locked: Locked,
        action: ConsultAction,
        to_status: ConsultStatus,
        actor: str,
        now: datetime,
        *,
        from_status: ConsultStatus | None = None,
    ) -> None:
        self.consults.store.update(conn, locked.pk, now, status=to_status)
        self.consults.store.add_history(
            conn,
            locked.pk,
            HistoryEntry(
                time=now,
                actor=actor,
                action=action,
                from_status=from_status or locked.consult.status,
                to_status=to_status,
                assignee=locked.consult.assignee,
            ),
        )


def _signing_role(principal: Principal, role: SignatureRole | str | None) -> SignatureRole:
    """The role the caller signs in; 403 when their role cannot give that signature."""
    if role is None:
        if principal.role is Role.SPECIALIST:
            return SignatureRole.REVIEWING
        if principal.role in _PERFORMERS:
            return SignatureRole.PERFORMING
        raise PermissionDeniedError(
            f"reports are signed by specialists (reviewing) and by sonographers or township doctors "
            f"(performing); {principal.username} is {principal.role.value}"
        )
    role = SignatureRole(role)
    if role is SignatureRole.REVIEWING and principal.role is not Role.SPECIALIST:
        raise PermissionDeniedError(
            f"the reviewing signature needs the specialist role; {principal.username} is "
            f"{principal.role.value}"
        )
    if role is SignatureRole.PERFORMING and principal.role not in _PERFORMERS:
        raise PermissionDeniedError(
            f"the performing signature is a sonographer's or township doctor's; {principal.username} is "
            f"{principal.role.value}"
        )
    return role


def _check_assignee(locked: Locked, what: str) -> None:
    viewer = locked.viewer
    assert viewer is not None
    consult = locked.consult
    if consult.assignee is None:
        raise ConsultStateError(f"consult {consult.consult_id} has not been accepted by a specialist yet")
    if viewer.username != consult.assignee:
        raise PermissionDeniedError(
            f"only {consult.assignee}, the specialist who accepted consult {consult.consult_id}, "
            f"may {what} it"
        )


def _refuse_if_final(consult_id: str, report: Report | None) -> None:
    final = report.final_signature if report else None
    if final is not None:
        raise ReportSignedError(
            f"the report of consult {consult_id} was signed as final by {final.signer} at "
            f"{format_time(final.signed_at)} and cannot be changed; add a signed addendum "
            "(POST .../report/addenda) instead"
        )


def _check_complete(consult_id: str, version: ReportVersion) -> None:
    if version.kind is not VersionKind.REPORT:
        return
    template = get_template(version.template)
    missing = template.missing_for_signature(
        version.content.get("findings", {}), version.content.get("impression", "")
    )
    if missing:
        raise InvalidReportError(
            f"version {version.version} of the report of consult {consult_id} cannot be signed yet: "
            f"fill in {', '.join(missing)}"
        )


def _text(value: str, name: str, limit: int, *, required: bool = False) -> str:
    text = value.strip()
    if len(text) > limit:
        raise InvalidReportError(f"{name} is longer than {limit} characters")
    if required and not text:
        raise InvalidReportError(f"{name} must not be empty")
    return text


def _make_signature(
    consult: Consult,
    version: ReportVersion,
    key: SigningKey,
    role: SignatureRole,
    principal: Principal,
    signer_name: str,
    now: datetime,
    reference: Mapping[str, Any] | None,
    refers_to: int | None,
) -> ReportSignature:
    payload = canonical_json(
        signature_payload(
            subject_of(consult),
            version,
            role=role,
            signer=principal.username,
            signer_name=signer_name[:128],
            signer_organisation=principal.organisation,
            signed_at=now,
            algorithm=key.algorithm,
            key_fingerprint=key.fingerprint,
            reference=reference,
        )
    )
    return ReportSignature(
        version=version.version,
        role=role,
        signer=principal.username,
        signer_name=signer_name[:128],
        signer_organisation=principal.organisation,
        signed_at=now,
        algorithm=key.algorithm,
        key_fingerprint=key.fingerprint,
        signature=sign(key.private_key, payload),
        payload_sha256=digest(payload),
        refers_to_version=refers_to,
    )
