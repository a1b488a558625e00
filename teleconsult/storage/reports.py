"""Report versions and signatures in the index database.

Both tables are append-only (triggers from migration 0007): this module
only inserts and reads. ``content`` holds the version's canonical JSON, the
very text whose digest signatures cover.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from teleconsult.domain.consults import utc
from teleconsult.domain.reports import (
    Report,
    ReportSignature,
    ReportVersion,
    SignatureRole,
    VersionKind,
)
from teleconsult.domain.signing import canonical_json
from teleconsult.errors import AlreadySignedError
from teleconsult.storage.tables import ConsultRow, ReportSignatureRow, ReportVersionRow
from teleconsult.storage.transactions import reading

__all__ = ["ReportStore"]

_consults = ConsultRow.__table__
_versions = ReportVersionRow.__table__
_signatures = ReportSignatureRow.__table__


def _version(row: Any) -> ReportVersion:
    return ReportVersion(
        version=row.version,
        kind=VersionKind(row.kind),
        template=row.template,
        content=json.loads(row.content),
        content_sha256=row.content_sha256,
        author=row.author,
        author_organisation=row.author_organisation,
        created_at=utc(row.created_at),
    )


def _signature(row: Any) -> ReportSignature:
    return ReportSignature(
        version=row.version,
        role=SignatureRole(row.role),
        signer=row.signer,
        signer_name=row.signer_name,
        signer_organisation=row.signer_organisation,
        signed_at=utc(row.signed_at),
        algorithm=row.algorithm,
        key_fingerprint=row.key_fingerprint,
        signature=row.signature,
        payload_sha256=row.payload_sha256,
        refers_to_version=row.refers_to_version,
    )


class ReportStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self, conn: Connection, consult_pk: int, consult_id: str) -> Report | None:
        """The consult's report as stored, or None before its first version."""
        versions = conn.execute(
            select(_versions).where(_versions.c.consult_pk == consult_pk).order_by(_versions.c.version)
        ).all()
        if not versions:
            return None
        signatures = conn.execute(
            select(_signatures).where(_signatures.c.consult_pk == consult_pk).order_by(_signatures.c.pk)
        ).all()
        return Report(
            consult_id=consult_id,
            versions=tuple(_version(row) for row in versions),
            signatures=tuple(_signature(row) for row in signatures),
        )

    def report(self, consult_id: str) -> Report | None:
        with reading(self.engine) as conn:
            pk = conn.execute(select(_consults.c.pk).where(_consults.c.consult_id == consult_id)).scalar()
            return None if pk is None else self.load(conn, int(pk), consult_id)

    def add_version(self, conn: Connection, consult_pk: int, version: ReportVersion) -> None:
        conn.execute(
            _versions.insert().values(
                consult_pk=consult_pk,
                version=version.version,
                kind=version.kind.value,
                template=version.template,
                content=canonical_json(dict(version.content)).decode("utf-8"),
                content_sha256=version.content_sha256,
                author=version.author,
                author_organisation=version.author_organisation,
                created_at=version.created_at,
            )
        )

    def add_signature(
        self, conn: Connection, consult_pk: int, consult_id: str, signature: ReportSignature
    ) -> None:
        """Insert one signature; a second one for the same version and role is ``AlreadySignedError``."""
        try:
            with conn.begin_nested():
                conn.execute(
                    _signatures.insert().values(
                        consult_pk=consult_pk,
                        version=signature.version,
                        role=signature.role.value,
                        signer=signature.signer,
                        signer_name=signature.signer_name[:128],
                        signer_organisation=signature.signer_organisation,
                        signed_at=signature.signed_at,
                        algorithm=signature.algorithm,
                        key_fingerprint=signature.key_fingerprint,
                        signature=signature.signature,
                        payload_sha256=signature.payload_sha256,
                        refers_to_version=signature.refers_to_version,
                    )
                )
        except IntegrityError as exc:
            raise AlreadySignedError(
                f"version {signature.version} of the report of consult {consult_id} has a "
                f"{signature.role.value} signature already"
            ) from exc
