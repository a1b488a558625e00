"""The outputs of a signed report over REST: its PDF, and what was made for each signed version.

``GET /api/consults/{id}/report/pdf`` is the PDF of the report's newest
signed version (404 before the report is final, and while that version's
PDF is being made); ``GET .../report/outputs`` lists, per signed version,
the state of its outputs (done, or failed with the reason and the next
attempt), the DICOM objects stored in the study, and how far their
forwarding got. Both are read, authorised and audited exactly as the
report itself (``report.read``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from teleconsult.api.consulting import ReportsDep, audited
from teleconsult.api.deps import PrincipalDep, StoreDep
from teleconsult.api.openapi import problem_response
from teleconsult.api.outputs import OutputsDep, outputs_lifespan
from teleconsult.errors import NotFoundError
from teleconsult.storage.report_outputs import OutputRecord, OutputStatus

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["reports"], lifespan=outputs_lifespan)

ConsultId = Annotated[str, Path(max_length=64, description="the consult's id (a UUID)")]

_NOT_FOUND = problem_response("No such consult or report, or not visible to the caller (the same answer)")
PDF = "application/pdf"


class ForwardPublic(BaseModel):
    sop_instance_uid: str
    destination_ae_title: str
    rule: str
    status: str
    attempts: int
    last_error: str | None


class DicomObjectPublic(BaseModel):
    series_instance_uid: str
    sop_instance_uid: str


class OutputPublic(BaseModel):
    """The outputs of one signed version of the report."""

    version: int
    kind: str = Field(description="report (the final version) or addendum")
    status: OutputStatus = Field(description="pending, producing, done, or failed (tried again later)")
    attempts: int
    last_error: str | None = Field(description="why the last attempt failed (None once done)")
    next_attempt_at: datetime | None = Field(description="when a failed attempt is tried again")
    requested_at: datetime
    produced_at: datetime | None
    pdf_sha256: str | None
    study_instance_uid: str | None
    structured_report: DicomObjectPublic | None = Field(description="the Enhanced SR stored in the study")
    encapsulated_pdf: DicomObjectPublic | None = Field(description="the Encapsulated PDF stored in the study")
    forwarding: list[ForwardPublic] = Field(description="forwarding queue rows of these objects")


def _object(series: str | None, instance: str | None) -> DicomObjectPublic | None:
    if series is None or instance is None:
        return None
    return DicomObjectPublic(series_instance_uid=series, sop_instance_uid=instance)


def _output_public(record: OutputRecord, forwarding: list[ForwardPublic]) -> OutputPublic:
    ours = {record.sr_sop_instance_uid, record.pdf_sop_instance_uid} - {None}
    return OutputPublic(
        version=record.version,
        kind=record.kind,
        status=record.status,
        attempts=record.attempts,
        last_error=record.last_error,
        next_attempt_at=record.next_attempt_at if record.status is OutputStatus.FAILED else None,
        requested_at=record.created_at,
        produced_at=record.produced_at,
        pdf_sha256=record.pdf_sha256,
        study_instance_uid=record.study_instance_uid,
        structured_report=_object(record.sr_series_instance_uid, record.sr_sop_instance_uid),
        encapsulated_pdf=_object(record.pdf_series_instance_uid, record.pdf_sop_instance_uid),
        forwarding=[entry for entry in forwarding if entry.sop_instance_uid in ours],
    )


@router.get(
    "/consults/{consult_id}/report/pdf",
    response_class=Response,
    summary="The PDF of the signed report (its newest signed version)",
    responses={
        200: {
            "description": "The PDF, with both organisations, the patient, findings and both signatures",
            "content": {PDF: {"schema": {"type": "string", "format": "binary"}}},
        },
        404: problem_response(
            "No such consult or report, not visible to the caller, not final yet, or its PDF is still "
            "being made (GET .../report/outputs says why)"
        ),
    },
)
def read_report_pdf(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ReportsDep, outputs: OutputsDep
) -> Response:
    with audited(request, principal, "report.read") as note:
        note.consult(service.consults.get(principal, consult_id))
        _consult, report = service.report(principal, consult_id)
        if report.final_signature is None:
            raise NotFoundError(
                f"the report of consult {consult_id} is not final yet: its PDF is made when the "
                "reviewing specialist signs"
            )
        version = report.current.version
        pdf = outputs.pdf(consult_id, version)
        if pdf is None:
            raise NotFoundError(
                f"the PDF of version {version} of the report of consult {consult_id} is being made; "
                "retry shortly (GET .../report/outputs shows its state)"
            )
        note.detail = f"PDF of the report of consult {consult_id}, version {version}"
    return Response(
        pdf,
        media_type=PDF,
        headers={
            "Content-Disposition": f'inline; filename="report-{consult_id}-v{version}.pdf"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/consults/{consult_id}/report/outputs",
    response_model=list[OutputPublic],
    summary="What was made for each signed version: PDF, SR and Encapsulated PDF, and their forwarding",
    responses={404: _NOT_FOUND},
)
def list_report_outputs(
    consult_id: ConsultId,
    request: Request,
    principal: PrincipalDep,
    service: ReportsDep,
    outputs: OutputsDep,
    store: StoreDep,
) -> list[OutputPublic]:
    with audited(request, principal, "report.read") as note:
        consult = service.consults.get(principal, consult_id)
        note.consult(consult)
        service.report(principal, consult_id)
        records = outputs.of_consult(consult_id)
        note.detail = f"outputs of the report of consult {consult_id} ({len(records)} signed versions)"
    forwarding: list[ForwardPublic] = []
    if consult.study_instance_uid is not None and records:
        forwarding = [
            ForwardPublic(
                sop_instance_uid=entry.sop_instance_uid,
                destination_ae_title=entry.destination_ae_title,
                rule=entry.rule,
                status=entry.status.value,
                attempts=entry.attempts,
                last_error=entry.last_error,
            )
            for entry in store.outbox.list_entries(study_instance_uid=consult.study_instance_uid, limit=None)
        ]
    return [_output_public(record, forwarding) for record in records]
