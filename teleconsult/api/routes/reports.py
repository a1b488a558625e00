"""Reports of consults over REST: templates, drafts, signatures, addenda, versions, verification.

``PUT /api/consults/{id}/report`` saves a draft (a new version each time),
``POST .../report/sign`` signs the newest version as the caller (performing
for the requesting side, reviewing for the assigned specialist, which makes
it final), ``POST .../report/addenda`` adds a signed addendum to a final
report, ``GET .../report/verify`` checks every signature against the stored
rows. The rules are in ``teleconsult/consults/reporting.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, status

from teleconsult.api.consult_schemas import (
    AddendumCreate,
    ReportDraft,
    ReportPublic,
    SignBody,
    TemplatePublic,
    VerificationPublic,
    VersionPublic,
    report_public,
    template_public,
    verification_public,
    version_public,
)
from teleconsult.api.consulting import ReportsDep, audited
from teleconsult.api.deps import PrincipalDep
from teleconsult.api.openapi import problem_response
from teleconsult.domain.report_templates import TEMPLATES, get_template
from teleconsult.errors import NotFoundError, TeleconsultError

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["reports"])

ConsultId = Annotated[str, Path(max_length=64, description="the consult's id (a UUID)")]

_NOT_FOUND = problem_response("No such consult or report, or not visible to the caller (the same answer)")
_FORBIDDEN = problem_response("Visible, but the caller's role or side may not do this")
_CONFLICT = problem_response(
    "Not possible now (the report is final, signed already, or the consult's state forbids it); "
    "nothing was changed"
)
_INVALID = problem_response("The content does not fit the template, or is incomplete for signing")
_BAD_BODY = problem_response("The body is not JSON")


@router.get(
    "/report-templates",
    response_model=list[TemplatePublic],
    response_model_by_alias=True,
    summary="Report templates per exam type, with zh-CN and English labels",
)
def list_templates(_principal: PrincipalDep) -> list[TemplatePublic]:
    return [template_public(template) for template in TEMPLATES.values()]


@router.get(
    "/report-templates/{code}",
    response_model=TemplatePublic,
    response_model_by_alias=True,
    summary="One report template",
    responses={404: problem_response("No such template")},
)
def read_template(code: Annotated[str, Path(max_length=32)], _principal: PrincipalDep) -> TemplatePublic:
    try:
        return template_public(get_template(code))
    except TeleconsultError as exc:
        raise NotFoundError(exc.message) from exc


@router.get(
    "/consults/{consult_id}/report",
    response_model=ReportPublic,
    summary="The report (newest version), its signatures and addenda",
    responses={404: _NOT_FOUND},
)
def read_report(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ReportsDep
) -> ReportPublic:
    with audited(request, principal, "report.read") as note:
        note.consult(service.consults.get(principal, consult_id))
        consult, report = service.report(principal, consult_id)
        note.detail = (
            f"report of consult {consult_id}, version {report.current.version} ({report.status.value})"
        )
    return report_public(consult, report)


@router.put(
    "/consults/{consult_id}/report",
    response_model=ReportPublic,
    summary="Save the draft (template, findings, impression) as a new version",
    responses={400: _BAD_BODY, 403: _FORBIDDEN, 404: _NOT_FOUND, 409: _CONFLICT, 422: _INVALID},
)
def save_draft(
    consult_id: ConsultId, body: ReportDraft, request: Request, principal: PrincipalDep, service: ReportsDep
) -> ReportPublic:
    with audited(request, principal, "report.update") as note:
        note.consult(service.consults.get(principal, consult_id))
        note.detail = f"draft of the report of consult {consult_id}"
        consult, report = service.save_draft(
            principal,
            consult_id,
            template=body.template,
            findings=body.findings,
            impression=body.impression,
            base_version=body.base_version,
        )
        note.detail += f": version {report.current.version}"
    return report_public(consult, report)


@router.post(
    "/consults/{consult_id}/report/submit",
    response_model=ReportPublic,
    summary="Declare the report complete (the assigned specialist): the consult is reported",
    responses={403: _FORBIDDEN, 404: _NOT_FOUND, 409: _CONFLICT, 422: _INVALID},
)
def submit_report(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ReportsDep
) -> ReportPublic:
    with audited(request, principal, "report.submit") as note:
        note.consult(service.consults.get(principal, consult_id))
        note.detail = f"report of consult {consult_id} submitted"
        service.submit(principal, consult_id)
        consult, report = service.report(principal, consult_id)
    return report_public(consult, report)


@router.post(
    "/consults/{consult_id}/report/sign",
    response_model=ReportPublic,
    summary="Sign the newest version as the caller: performing (township) or reviewing (specialist, final)",
    responses={
        400: _BAD_BODY,
        403: problem_response(
            "The caller's role cannot give this signature (e.g. reviewing without the specialist role)"
        ),
        404: _NOT_FOUND,
        409: problem_response("Signed already, final already, or not yet possible in the consult's state"),
        422: _INVALID,
    },
)
def sign_report(
    consult_id: ConsultId,
    request: Request,
    principal: PrincipalDep,
    service: ReportsDep,
    body: Annotated[SignBody | None, Body()] = None,
) -> ReportPublic:
    with audited(request, principal, "report.sign") as note:
        note.consult(service.consults.get(principal, consult_id))
        note.detail = f"report of consult {consult_id}"
        consult, report, signature = service.sign(principal, consult_id, body.role if body else None)
        note.detail = (
            f"report of consult {consult_id} version {signature.version} signed as {signature.role.value} "
            f"with key {signature.key_fingerprint}, payload sha256 {signature.payload_sha256}"
        )
    return report_public(consult, report)


@router.post(
    "/consults/{consult_id}/report/addenda",
    status_code=status.HTTP_201_CREATED,
    response_model=ReportPublic,
    summary="Add a signed addendum to a final report (the assigned specialist)",
    responses={400: _BAD_BODY, 403: _FORBIDDEN, 404: _NOT_FOUND, 409: _CONFLICT, 422: _INVALID},
)
def add_addendum(
    consult_id: ConsultId,
    body: AddendumCreate,
    request: Request,
    principal: PrincipalDep,
    service: ReportsDep,
) -> ReportPublic:
    with audited(request, principal, "report.addendum.create") as note:
        note.consult(service.consults.get(principal, consult_id))
        note.detail = f"addendum to the report of consult {consult_id}"
        consult, report, signature = service.add_addendum(
            principal, consult_id, text=body.text, reason=body.reason
        )
        note.detail += f": version {signature.version} signed with key {signature.key_fingerprint}"
    return report_public(consult, report)


@router.get(
    "/consults/{consult_id}/report/versions",
    response_model=list[VersionPublic],
    summary="Every version of the report, oldest first, with its signatures",
    responses={404: _NOT_FOUND},
)
def list_versions(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ReportsDep
) -> list[VersionPublic]:
    with audited(request, principal, "report.read") as note:
        note.consult(service.consults.get(principal, consult_id))
        _consult, report = service.report(principal, consult_id)
        note.detail = (
            f"version history of the report of consult {consult_id} ({len(report.versions)} versions)"
        )
    return [version_public(report, version) for version in report.versions]


@router.get(
    "/consults/{consult_id}/report/versions/{version}",
    response_model=VersionPublic,
    summary="One version of the report",
    responses={404: _NOT_FOUND},
)
def read_version(
    consult_id: ConsultId,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    request: Request,
    principal: PrincipalDep,
    service: ReportsDep,
) -> VersionPublic:
    with audited(request, principal, "report.read") as note:
        note.consult(service.consults.get(principal, consult_id))
        _consult, report = service.report(principal, consult_id)
        found = report.version(version)
        if found is None:
            raise NotFoundError(f"the report of consult {consult_id} has no version {version}")
        note.detail = f"version {version} of the report of consult {consult_id}"
    return version_public(report, found)


@router.get(
    "/consults/{consult_id}/report/verify",
    response_model=VerificationPublic,
    summary="Check every signature of the report against the stored content",
    responses={404: _NOT_FOUND},
)
def verify_report(
    consult_id: ConsultId, request: Request, principal: PrincipalDep, service: ReportsDep
) -> VerificationPublic:
    with audited(request, principal, "report.verify") as note:
        note.consult(service.consults.get(principal, consult_id))
        verification = service.verify(principal, consult_id)
        note.detail = (
            f"report of consult {consult_id}: {'valid' if verification.valid else 'NOT valid'}, "
            f"{len(verification.signatures)} signatures"
        )
    return verification_public(verification)
