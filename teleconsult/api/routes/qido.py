"""QIDO-RS (PS3.18 10.6): search for studies, series and instances under /dicomweb.

Matching is C-FIND's (``Index.query`` over ``storage/matching.py``),
restricted to the caller's scope: studies of other organisations are simply
absent. No match is ``200`` with ``[]`` (PS3.18 allows 204 too; an empty
array lets every client parse the body the same way).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from teleconsult.api.auditing import audit_request
from teleconsult.api.deps import CallerDep, SettingsDep, StoreDep
from teleconsult.api.dicomweb.access import SeriesPath, StudyPath, path_uid, study_owner
from teleconsult.api.dicomweb.dicomjson import (
    Computed,
    DicomJSONResponse,
    keyword_attribute,
    rows_to_json_bytes,
)
from teleconsult.api.dicomweb.media import DICOM_JSON, negotiate_json
from teleconsult.api.dicomweb.query import DEFAULT_RETURN_KEYS, MAX_INTEGER, parse_qido
from teleconsult.api.dicomweb.uris import PREFIX, DicomwebURLs
from teleconsult.audit import AuditOutcome, Interface
from teleconsult.config import Settings
from teleconsult.domain.identity import Principal
from teleconsult.storage.matching import ATTRIBUTES, AttributeKind, Level, supported_keywords
from teleconsult.storage.store import InstanceStore

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, tags=["DICOMweb QIDO-RS"])

_TRUNCATED_WARNING = (
    '299 teleconsult "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)


def _query_parameters(level: Level, path_keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The query string of a search at ``level``, as OpenAPI parameters.

    Matching keys are free-form (``{attributeID}={value}``): one exploded
    object parameter lists the keys the index matches at this level, by
    keyword (a tag such as ``00100010`` is accepted for each too, but not
    both for one attribute). Any other attribute may only be asked for, with
    an empty value or ``includefield``; a value for it is 400.
    """
    keys: dict[str, Any] = {}
    for keyword in supported_keywords(level):
        if ATTRIBUTES[keyword].kind is not AttributeKind.COUNT and keyword not in path_keys:
            keys[keyword] = {"type": "string"}
    fields = ["all"]
    for keyword in supported_keywords(level):
        fields += [keyword, keyword_attribute(keyword)[0]]
    return [
        {
            "name": "match",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": True,
            "description": (
                "Matching keys by keyword or tag (PatientName=王*, 00100010=王*), matched as C-FIND "
                "matches: * and ? wildcards (literal or percent-encoded), date ranges, UID lists (comma "
                "or backslash). An empty value only asks for the attribute to be returned; any other "
                "attribute may be asked for that way."
            ),
            "schema": {"type": "object", "properties": keys, "additionalProperties": False},
        },
        {
            "name": "includefield",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": (
                "Attributes to return as well, comma-separated or repeated: keywords or tags, or 'all' "
                "(every attribute the index keeps at this level, listed here). Any other DICOM keyword "
                "or tag is accepted too and returned empty, as C-FIND returns what it does not keep."
            ),
            "schema": {"type": "array", "items": {"type": "string", "enum": fields}},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Most matches to return (at most TELECONSULT_HTTP_QIDO_MAX_RESULTS are sent)",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER},
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "Matches to skip",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER},
        },
        {
            "name": "fuzzymatching",
            "in": "query",
            "required": False,
            "description": "Accepted; person names always match case-insensitively in every component group.",
            "schema": {"type": "boolean"},
        },
    ]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Matches as a DICOM JSON array (empty when nothing matches)",
        "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
    },
    400: {"description": "Unknown or unmatchable query key, bad value, or an invalid UID in the path"},
    401: {"description": "No valid bearer token"},
    406: {"description": "Accept does not allow application/dicom+json"},
}


def _route(level: Level, *path_keys: str) -> dict[str, Any]:
    return {
        "response_class": DicomJSONResponse,
        "responses": _RESPONSES,
        "openapi_extra": {"parameters": _query_parameters(level, path_keys)},
    }


def _computed(urls: DicomwebURLs, level: Level) -> dict[str, Computed]:
    """RetrieveURL (0008,1190) of each result."""
    if level is Level.STUDY:
        return {"00081190": ("UR", ("StudyInstanceUID",), urls.study)}
    if level is Level.SERIES:
        return {"00081190": ("UR", ("StudyInstanceUID", "SeriesInstanceUID"), urls.series)}
    return {"00081190": ("UR", ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"), urls.instance)}


_CONSTANTS = {
    "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    "00080056": {"vr": "CS", "Value": ["ONLINE"]},
}


def _search(
    request: Request,
    principal: Principal,
    store: InstanceStore,
    settings: Settings,
    level: Level,
    *,
    defaults: tuple[str, ...],
    study: str | None = None,
    series: str | None = None,
) -> Response:
    negotiate_json(request.headers.get("accept"))
    path_keys: dict[str, str] = {}
    if study is not None:
        path_keys["StudyInstanceUID"] = path_uid(study, "Study Instance UID")
    if series is not None:
        path_keys["SeriesInstanceUID"] = path_uid(series, "Series Instance UID")
    query = parse_qido(request.query_params.multi_items(), level, path_keys=path_keys, default_keys=defaults)
    maximum = settings.http_qido_max_results
    limit = min(query.limit or maximum, maximum)
    # One row more than allowed tells whether the server cut the answer short.
    table = store.index.query_table(
        level,
        query.keys,
        return_keys=query.index_return_keys,
        organisations=principal.scope,
        limit=limit + 1 if limit == maximum else limit,
        offset=query.offset,
    )
    headers = {}
    rows = table.rows
    if len(rows) > limit:
        rows = rows[:limit]
        headers["Warning"] = _TRUNCATED_WARNING
    outcome = AuditOutcome.SUCCESS
    patient_id = query.keys.get("PatientID") if "*" not in query.keys.get("PatientID", "*") else None
    detail = f"{level.value} level, {len(rows)} matches"
    if study is not None and not rows:
        owner = study_owner(store, study)
        if owner is not None and not principal.can_see(owner[0]):
            outcome = AuditOutcome.DENIED
            patient_id = owner[1]
            detail += f"; study of organisation {owner[0]} is outside the caller's scope"
    audit_request(
        request,
        "query",
        outcome,
        principal=principal,
        interface=Interface.DICOMWEB,
        study_instance_uid=study,
        patient_id=patient_id,
        detail=detail,
    )
    body = rows_to_json_bytes(
        table.columns,
        rows,
        query.return_keys,
        constants=_CONSTANTS,
        computed=_computed(DicomwebURLs(request), level),
    )
    return Response(body, media_type=DICOM_JSON, headers=headers)


_ALL_STUDY = DEFAULT_RETURN_KEYS[Level.STUDY]
_ALL_SERIES = DEFAULT_RETURN_KEYS[Level.SERIES]
_ALL_IMAGE = DEFAULT_RETURN_KEYS[Level.IMAGE]


@router.get("/studies", summary="Search for studies", **_route(Level.STUDY))
def search_studies(request: Request, caller: CallerDep, store: StoreDep, settings: SettingsDep) -> Response:
    principal = caller.principal()
    return _search(request, principal, store, settings, Level.STUDY, defaults=_ALL_STUDY)


@router.get("/series", summary="Search for series of all studies", **_route(Level.SERIES))
def search_series(request: Request, caller: CallerDep, store: StoreDep, settings: SettingsDep) -> Response:
    principal = caller.principal()
    return _search(request, principal, store, settings, Level.SERIES, defaults=_ALL_STUDY + _ALL_SERIES)


@router.get(
    "/studies/{study}/series",
    summary="Search for series of a study",
    **_route(Level.SERIES, "StudyInstanceUID"),
)
def search_study_series(
    study: StudyPath, request: Request, caller: CallerDep, store: StoreDep, settings: SettingsDep
) -> Response:
    principal = caller.principal()
    return _search(request, principal, store, settings, Level.SERIES, defaults=_ALL_SERIES, study=study)


@router.get("/instances", summary="Search for instances of all studies", **_route(Level.IMAGE))
def search_instances(request: Request, caller: CallerDep, store: StoreDep, settings: SettingsDep) -> Response:
    principal = caller.principal()
    return _search(
        request, principal, store, settings, Level.IMAGE, defaults=_ALL_STUDY + _ALL_SERIES + _ALL_IMAGE
    )


@router.get(
    "/studies/{study}/instances",
    summary="Search for instances of a study",
    **_route(Level.IMAGE, "StudyInstanceUID"),
)
def search_study_instances(
    study: StudyPath, request: Request, caller: CallerDep, store: StoreDep, settings: SettingsDep
) -> Response:
    principal = caller.principal()
    return _search(
        request, principal, store, settings, Level.IMAGE, defaults=_ALL_SERIES + _ALL_IMAGE, study=study
    )


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="Search for instances of a series",
    **_route(Level.IMAGE, "StudyInstanceUID", "SeriesInstanceUID"),
)
def search_series_instances(
    study: StudyPath,
    series: SeriesPath,
    request: Request,
    caller: CallerDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    principal = caller.principal()
    return _search(
        request, principal, store, settings, Level.IMAGE, defaults=_ALL_IMAGE, study=study, series=series
    )
