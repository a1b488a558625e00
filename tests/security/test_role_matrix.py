"""Every role-restricted HTTP operation, called as each of the four roles: the role matrix.

``test_access_matrix.py`` sweeps bad credentials and users of another
township. This module is the other axis: users who *do* see the data (all of
them see TOWN01's studies and consults through the organisation tree), so
when one is refused it is for their role, or for their part in the consult,
never for their organisation. The actors (tests/conftest.py's users):

- sonographer: ``sono1`` of TOWN01;
- township_doctor: ``doctor1`` of TOWN01;
- specialist: ``specialist`` of COUNTY, above TOWN01;
- admin: ``admin`` of COUNTY.

Every consult here is requested by ``sono1`` on a TOWN01 study and addressed
to the COUNTY specialists' pool, so ``specialist`` is among those it is
addressed to, and, once they accepted it, its assignee. ``ROLE_TABLE`` says,
per operation (and per state or variant where the answer depends on it),
which roles may do it; for each case every role outside the set must get 403
problem+json (never a 2xx) and leave exactly one ``denied`` audit row naming
the user and role, and every role inside it must get the case's status (a
2xx on the fresh state each allowed role is given; 409 where the case says
the state, not the role, refuses), with no ``denied`` row.

``EVERY_ROLE`` lists the secured operations without any role rule (only the
organisation scope or the consult's visibility, the same for every role);
each role calls each of them on a world where all of them have something to
serve. ``DEVICE_ONLY`` is the kiosk intake, which takes a device token and
no user at all. A secured operation of the OpenAPI schema in none of the
three fails ``test_every_secured_operation_is_classified``: a new route must
be put in the matrix.

A case where the product does otherwise than the rule it names carries the
defect in ``bug`` and is a strict xfail: fixing the product makes it pass,
and the mark must then go.

The app is made once for the module (a fresh app per case would cost a
second each); every case makes its own consults, so cases do not meet.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from PIL import Image

import teleconsult.security
from device_adapters.kiosk.resident_id import check_character
from teleconsult.api.app import create_app
from teleconsult.api.routes.kiosk import kiosk_intake
from teleconsult.audit import AuditLog
from teleconsult.config import Settings
from teleconsult.domain.departments import DepartmentMember
from teleconsult.events import EventBus
from teleconsult.media.recording import RecordingInfo, RecordingStatus, recording_paths
from teleconsult.storage.departments import DepartmentStore
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.conftest import COMMUNITY, PASSWORD, USERS, ApiClient, database_for
from tests.device_adapters.writers import synthetic_leads, write_csv
from tests.factories import encode, make_image, part10
from tests.teleconsult.consults.conftest import DRAFT

SONOGRAPHER, TOWNSHIP_DOCTOR, SPECIALIST, ADMIN = ROLES = (
    "sonographer",
    "township_doctor",
    "specialist",
    "admin",
)
ACTOR = {SONOGRAPHER: "sono1", TOWNSHIP_DOCTOR: "doctor1", SPECIALIST: "specialist", ADMIN: "admin"}
EVERYONE = frozenset(ROLES)
CLINICIANS = frozenset({SONOGRAPHER, TOWNSHIP_DOCTOR, SPECIALIST})
TOWNSHIP = frozenset({SONOGRAPHER, TOWNSHIP_DOCTOR})

PROBLEM_JSON = "application/problem+json"
KIOSK = "KIOSK-T01"
TURN = "turn:turn.county.invalid:3478?transport=udp"
_PARAMETER = re.compile(r"{(\w+)}")
_LEADS = synthetic_leads(("I", "II"), seconds=2.0)


# -- the world: one app, the community of tests/conftest.py, a kiosk of TOWN01 ----------------------------


@dataclass
class World:
    api: ApiClient
    audit: AuditLog
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        return self.api.client

    def headers(self, user: str) -> dict[str, str]:
        if user not in self._headers:  # signed in once per user
            self._headers[user] = self.api.headers(user)
        return self._headers[user]

    def call(self, method: str, user: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers(user), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def ok(self, method: str, user: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """A step of a set-up: it must succeed."""
        response = self.call(method, user, path, **kwargs)
        assert response.status_code == status, (method, user, path, response.text[:300])
        return response.json()

    def denied(self, actor: str, resource: str) -> list[dict[str, Any]]:
        rows = self.audit.query(actor=actor, outcome="denied", limit=100_000)
        return [row for row in rows if row["resource"] == resource]

    # -- set-ups: each makes new consults, so a case never meets another's --------------------------------

    def study(self, patient_id: str = "P0001") -> dict[str, str]:
        """A TOWN01 ultrasound image with pixels (frames and rendered views have something to serve)."""
        ds = make_image(patient_id=patient_id, rows=16, columns=16)
        self.api.store.store_instance(
            encode(ds),
            ds.file_meta.TransferSyntaxUID,
            calling_ae_title="TOWNUS",
            source_organisation="TOWN01",
        )
        return {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID}

    def requested(self) -> dict[str, str]:
        """A consult on a new TOWN01 study, requested by sono1 and addressed to the COUNTY pool."""
        ctx = self.study()
        body = {
            "study_instance_uid": ctx["study"],
            "urgency": "urgent",
            "question": "肝内低回声结节，请会诊。",
        }
        consult = self.ok("POST", "sono1", "/api/consults", 201, json=body)
        assert consult["target"] == {
            "kind": "pool",
            "organisation": "COUNTY",
            "department": None,
            "specialist": None,
        }
        return {**ctx, "consult_id": consult["id"]}

    def accepted(self) -> dict[str, str]:
        """... accepted by specialist, its assignee from then on."""
        ctx = self.requested()
        self.ok("POST", "specialist", f"/api/consults/{ctx['consult_id']}/accept")
        return ctx

    def drafted(self, *, accept: bool = False) -> dict[str, str]:
        """... with a complete draft by sono1 (the requesting side's preliminary draft)."""
        ctx = self.accepted() if accept else self.requested()
        self.ok("PUT", "sono1", f"/api/consults/{ctx['consult_id']}/report", json=DRAFT)
        return ctx

    def in_review(self) -> dict[str, str]:
        """Accepted, with a complete draft by the assigned specialist (which takes it into review)."""
        ctx = self.accepted()
        self.ok("PUT", "specialist", f"/api/consults/{ctx['consult_id']}/report", json=DRAFT)
        return ctx

    def performing_signed(self) -> dict[str, str]:
        """Accepted, drafted by sono1, who signed it as performing."""
        ctx = self.drafted(accept=True)
        self.ok(
            "POST", "sono1", f"/api/consults/{ctx['consult_id']}/report/sign", json={"role": "performing"}
        )
        return ctx

    def final(self) -> dict[str, str]:
        """... and signed as reviewing by specialist: final, the consult ``signed``."""
        ctx = self.performing_signed()
        path = f"/api/consults/{ctx['consult_id']}/report/sign"
        self.ok("POST", "specialist", path, json={"role": "reviewing"})
        return ctx

    def patient_consult(self) -> dict[str, str]:
        """A consult on patient P-LINK before their study arrived, and the study that then arrived."""
        body = {"patient_id": "P-LINK", "urgency": "critical", "question": "胸痛2小时，图像待传。"}
        consult = self.ok("POST", "sono1", "/api/consults", 201, json=body)
        return {"consult_id": consult["id"], "link": self.study("P-LINK")["study"]}

    def referral(self, ctx: dict[str, str] | None = None, **body: Any) -> dict[str, str]:
        """A down referral (back to TOWN01) of an accepted consult, issued by specialist."""
        ctx = ctx or self.accepted()
        body = {"direction": "down", "reason": "病情稳定，转回乡镇卫生院随访。", **body}
        path = f"/api/consults/{ctx['consult_id']}/referrals"
        referral = self.ok("POST", "specialist", path, 201, json=body)
        assert referral["target"]["organisation"] == "TOWN01"
        return {**ctx, "referral_id": referral["id"]}

    def named_referral(self) -> dict[str, str]:
        """... addressed to doctor1 by name."""
        return self.referral(target_specialist="doctor1")

    def accepted_referral(self) -> dict[str, str]:
        ctx = self.referral()
        self.ok("POST", "doctor1", f"/api/referrals/{ctx['referral_id']}/accept")
        return ctx

    def session(self, ctx: dict[str, str] | None = None) -> dict[str, str]:
        """A running live session (no peer connected) of a requested consult, started by sono1."""
        ctx = ctx or self.requested()
        session = self.ok("POST", "sono1", "/api/live-sessions", 201, json={"consult_id": ctx["consult_id"]})
        return {**ctx, "session_id": session["id"]}

    def cancelled_session(self) -> dict[str, str]:
        """A live session whose consult sono1 then cancelled, which ended it."""
        ctx = self.session()
        self.ok("POST", "sono1", f"/api/consults/{ctx['consult_id']}/cancel", json={"reason": "患者已离开"})
        deadline = time.monotonic() + 10
        while self.ok("GET", "sono1", f"/api/live-sessions/{ctx['session_id']}")["status"] != "ended":
            assert time.monotonic() < deadline, "the cancel did not end the live session"
            time.sleep(0.05)
        return ctx

    def recording(self) -> dict[str, str]:
        """A finished recording of a session of a requested consult, as the recorder leaves it on disk."""
        ctx = self.requested()
        session_id = str(uuid.uuid4())
        video, manifest = recording_paths(self.api.settings.recordings_dir, ctx["consult_id"], session_id)
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(64))
        now = datetime.now(UTC)
        info = RecordingInfo(
            session_id=session_id,
            consult_id=ctx["consult_id"],
            study_instance_uid=ctx["study"],
            patient_id="P0001",
            status=RecordingStatus.COMPLETE,
            started_at=now - timedelta(minutes=5),
            ended_at=now,
            size=video.stat().st_size,
        )
        manifest.write_text(json.dumps(info.to_json()), encoding="utf-8")
        return {**ctx, "session_id": session_id}

    def member_path(self) -> dict[str, str]:
        """specialist in COUNTY's cardiology department (the path of that membership)."""
        return {"organisation": "COUNTY", "department": "CARDIO", "username": "specialist"}

    def membership(self) -> dict[str, str]:
        """... which exists."""
        DepartmentStore(self.api.store.index.engine).set_member(
            DepartmentMember("COUNTY", "CARDIO", "specialist", lead=False)
        )
        return self.member_path()

    def kiosk_visit(self) -> dict[str, str]:
        """Measurements of a villager taken at TOWN01's kiosk (its own device token, not a user's)."""
        response = self.client.post("/api/kiosk/measurements", **_kiosk_message(self))
        assert response.status_code == 201, response.text
        intake = response.json()
        return {
            "patient_key": intake["patient"]["patient_key"],
            "observation_id": intake["observations"][0]["id"],
        }


def nothing(_world: World | None = None) -> dict[str, str]:
    return {}


def _resident_id() -> str:
    """A made-up resident ID number (region 110105, born 1962-03-04) with its check character."""
    first17 = "11010519620304123"
    return first17 + check_character(first17)


def _kiosk_message(world: World) -> dict[str, Any]:
    """A kiosk's POST (its device token, one blood pressure), as ``client.post`` keywords."""
    token = kiosk_intake(world.client.app).registry.token(KIOSK)
    measured = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    body = {
        "device_id": KIOSK,
        "measured_at": measured.isoformat(),
        "resident_id": _resident_id(),
        "name": "王小明",
        "measurements": [{"type": "blood_pressure", "systolic": 132, "diastolic": 84, "unit": "mmHg"}],
    }
    return {"json": body, "headers": {"Authorization": f"Bearer {token}"}}


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """tests/conftest.py's ``database_url``, ``store`` and ``api`` fixtures, made once for the module."""
    folder = tmp_path_factory.mktemp("roles")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):  # as tests/conftest.py's _clean_environ, for the module's app
            if name.startswith("TELECONSULT_"):
                patch.delenv(name)
        patch.chdir(folder)
        # Many sign-ins: argon2 at its lowest cost (hashes carry their own parameters).
        patch.setattr(
            teleconsult.security, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        )
        with database_for(request.param, folder) as url:
            settings = Settings(
                data_dir=folder / "data",
                database_url=url,
                consult_overdue_check_seconds=0,
                ecg_triage_enabled=False,
                kiosk_devices={KIOSK: "TOWN01"},  # type: ignore[dict-item]
                turn_urls=[TURN],
                turn_secret="role-matrix-turn-secret",  # type: ignore[arg-type]
            )
            store = InstanceStore(settings, EventBus())
            store.open()
            try:
                identity = IdentityStore(store.index.engine)
                for code, name, parent in COMMUNITY:
                    identity.add_organisation(code, name, parent)
                # Below TOWN01, so every actor has an organisation below their own to upload for.
                identity.add_organisation("VILLAGE11", "Village 11", "TOWN01")
                for username, (role, organisation) in USERS.items():
                    identity.add_user(username, PASSWORD, role, organisation)
                with TestClient(create_app(settings, store)) as client:
                    api = ApiClient(client=client, store=store, settings=settings)
                    yield World(api=api, audit=AuditLog(store.index.engine))
            finally:
                store.close()


# -- requests -----------------------------------------------------------------------------------------------

Request = Callable[[World, Mapping[str, str], str], dict[str, Any]]


def no_body(_world: World, _ctx: Mapping[str, str], _role: str) -> dict[str, Any]:
    return {}


def send(body: Any) -> Request:
    return lambda _world, _ctx, _role: {"json": body}


def ecg(organisation: str | None = None) -> Request:
    def request(_world: World, _ctx: Mapping[str, str], role: str) -> dict[str, Any]:
        csv = write_csv(_LEADS, patient_id=f"ECG-{role}")
        form = {"organisation": organisation} if organisation else {}
        return {"files": [("file", ("ecg.csv", csv, "text/csv"))], "data": form}

    return request


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def image(organisation: str | None = None) -> Request:
    def request(_world: World, _ctx: Mapping[str, str], role: str) -> dict[str, Any]:
        form = {"patient_id": f"IMG-{role}", "modality": "OT", "study_date": "2026-11-24"}
        if organisation:
            form["organisation"] = organisation
        return {"files": [("file", ("export.png", _png(), "image/png"))], "data": form}

    return request


# -- the role table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One operation (in one state or variant), the roles that may do it, and how to call it."""

    name: str
    method: str
    path: str  # the OpenAPI path template
    allowed: frozenset[str]
    setup: Callable[[World], dict[str, str]]  # a fresh state: the path's values, and what the request needs
    request: Request = no_body
    status: int = 200  # what an allowed role gets on a fresh state
    status_for: Mapping[str, int] = field(default_factory=dict)  # ... where it differs by role
    why: str = ""  # where the rule comes from
    bug: str = ""  # the product does otherwise: the case is expected to fail (strict xfail)


CONSULT = "/api/consults/{consult_id}"
REPORT = f"{CONSULT}/report"
REFERRAL = "/api/referrals/{referral_id}"
LIVE = "/api/live-sessions"
MEMBER = "/api/departments/{organisation}/{department}/members/{username}"
REASON = {"reason": "患者已转上级医院。"}
DOWN = {"direction": "down", "reason": "病情稳定，转回乡镇卫生院随访。"}
ADDENDUM = {"text": "补充：肝右叶结节增强CT提示血管瘤。", "reason": "增强CT结果"}

ADMINS = frozenset({ADMIN})
SPECIALISTS = frozenset({SPECIALIST})
DOCTORS = frozenset({TOWNSHIP_DOCTOR})
REQUESTING = frozenset({SONOGRAPHER, TOWNSHIP_DOCTOR, ADMIN})  # is_requesting_side, for a TOWN01 consult


def request_consult(_world: World, ctx: Mapping[str, str], _role: str) -> dict[str, Any]:
    return {"json": {"study_instance_uid": ctx["study"], "urgency": "routine", "question": "请会诊"}}


def link_study(_world: World, ctx: Mapping[str, str], _role: str) -> dict[str, Any]:
    return {"json": {"study_instance_uid": ctx["link"]}}


def consult_body(_world: World, ctx: Mapping[str, str], _role: str) -> dict[str, Any]:
    return {"json": {"consult_id": ctx["consult_id"]}}


def consult_query(_world: World, ctx: Mapping[str, str], _role: str) -> dict[str, Any]:
    return {"params": {"consult_id": ctx["consult_id"]}}


# One case per operation, or per state or variant where the answer depends on it. ``why`` names the rule.
# fmt: off
ROLE_TABLE: list[Case] = [
    # -- administration: require_roles(Role.ADMIN) -----------------------------------------------------------
    Case("audit: read", "GET", "/api/audit", ADMINS, nothing, why="routes/audit.py AdminDep; docs/audit.md"),
    Case("audit: export", "GET", "/api/audit/export", ADMINS, nothing, why="routes/audit.py AdminDep"),
    Case("forwarding: retry", "POST", "/api/forwarding/retry", ADMINS, nothing,
         why="routes/forwarding.py require_roles(ADMIN); reading the queue is everyone's, scoped"),
    Case("departments: set a member", "PUT", MEMBER, ADMINS, World.member_path, send({"lead": False}),
         why="routes/departments.py AdminDep; docs/consults.md Targets"),
    Case("departments: remove a member", "DELETE", MEMBER, ADMINS, World.membership, status=204,
         why="routes/departments.py AdminDep"),
    # -- device uploads: require_roles(every role); for another organisation than one's own, admins only -----
    Case("devices: ECG of one's own organisation", "POST", "/api/devices/ecg", EVERYONE, nothing, ecg(),
         status=201, why="routes/devices.py UploaderDep; docs/devices.md 'Every role ... may upload'"),
    Case("devices: ECG for an organisation below one's own", "POST", "/api/devices/ecg", ADMINS, nothing,
         ecg("VILLAGE11"), status=201, why="routes/devices.py _organisation; docs/devices.md (403 row)"),
    Case("devices: image of one's own organisation", "POST", "/api/devices/images", EVERYONE, nothing,
         image(), status=201, why="routes/devices.py UploaderDep; docs/devices.md 'every clinical role'"),
    Case("devices: image for an organisation below one's own", "POST", "/api/devices/images", ADMINS,
         nothing, image("VILLAGE11"), status=201, why="routes/devices.py _organisation"),
    # -- consults: teleconsult/consults/service.py, domain/consults.py; docs/consults.md (table of steps) ----
    Case("consult: request", "POST", "/api/consults", CLINICIANS, World.study, request_consult, status=201,
         why="service.request: _CLINICAL; routes/consults.py 'Admins do not request consults'"),
    Case("consult: accept", "POST", f"{CONSULT}/accept", SPECIALISTS, World.requested,
         why="domain may_accept: a specialist it is addressed to (the COUNTY pool here)"),
    Case("consult: decline", "POST", f"{CONSULT}/decline", SPECIALISTS | ADMINS, World.requested,
         send(REASON), why="service.decline: addressees, assignee, target admins (manages_target), leads"),
    # The requesting side (domain is_requesting_side): the TOWN01 tree, county admins included; a
    # specialist only on a consult they requested themselves.
    Case("consult: cancel", "POST", f"{CONSULT}/cancel", REQUESTING, World.requested, send(REASON),
         why="service.cancel: is_requesting_side"),
    Case("consult: reassign while requested", "POST", f"{CONSULT}/reassign", REQUESTING, World.requested,
         send({**REASON, "target_specialist": "specialist"}),
         why="service.reassign: the requesting side before acceptance, target admins; not a pool member"),
    Case("consult: reassign once accepted", "POST", f"{CONSULT}/reassign", SPECIALISTS | ADMINS,
         World.accepted, send({**REASON, "target_organisation": "COUNTY"}),
         why="service.reassign: its assignee, target admins; the requesting side no longer"),
    Case("consult: start the review", "POST", f"{CONSULT}/review", SPECIALISTS, World.accepted,
         why="service.start_review: _assignee_only"),
    Case("consult: acknowledge the signed report", "POST", f"{CONSULT}/acknowledge", REQUESTING, World.final,
         why="service.acknowledge: is_requesting_side"),
    Case("consult: link the study that arrived", "PUT", f"{CONSULT}/study", REQUESTING, World.patient_consult,
         link_study, why="service.attach_study: is_requesting_side"),
    # -- reports: teleconsult/consults/reporting.py; docs/consults.md 'Drafts, versions, signatures' ---------
    Case("report: draft while requested", "PUT", REPORT, TOWNSHIP, World.requested, send(DRAFT),
         why="reporting._writer_side: the requesting side's sonographers and doctors (_PERFORMERS)"),
    Case("report: draft once accepted", "PUT", REPORT, CLINICIANS, World.accepted, send(DRAFT),
         why="reporting._writer_side: the assignee; the requesting side until the review starts"),
    Case("report: submit", "POST", f"{REPORT}/submit", SPECIALISTS, World.in_review,
         why="reporting.submit: _check_assignee"),
    Case("report: sign as performing", "POST", f"{REPORT}/sign", TOWNSHIP, World.drafted,
         send({"role": "performing"}), why="reporting._signing_role (_PERFORMERS), _check_performer"),
    Case("report: sign as reviewing", "POST", f"{REPORT}/sign", SPECIALISTS, World.performing_signed,
         send({"role": "reviewing"}), why="reporting._signing_role (specialists), _check_assignee"),
    # No role named: performing for township roles, reviewing for specialists (409 here, as nobody has
    # accepted the consult: the state refuses, after the role check), 403 for admins ("an admin signing").
    Case("report: sign in the caller's own role", "POST", f"{REPORT}/sign", CLINICIANS, World.drafted,
         status_for={SPECIALIST: 409}, why="reporting._signing_role(role=None); docs/consults.md Errors"),
    Case("report: signed addendum", "POST", f"{REPORT}/addenda", SPECIALISTS, World.final, send(ADDENDUM),
         status=201, why="reporting.add_addendum: Role.SPECIALIST, then _check_assignee"),
    # -- referrals: teleconsult/consults/referrals.py, domain/referrals.py; docs/consults.md Referrals -------
    Case("referral: issue", "POST", f"{CONSULT}/referrals", SPECIALISTS | ADMINS, World.accepted, send(DOWN),
         status=201, why="referrals._ISSUERS; docs 'A sonographer or township doctor ... may not issue one'"),
    # The target side is TOWN01 and the organisations above it: every actor here, whatever their role.
    Case("referral: accept, no one named", "POST", f"{REFERRAL}/accept", EVERYONE, World.referral,
         why="referrals._addressee: is_target_side, no role rule"),
    Case("referral: accept, doctor1 named", "POST", f"{REFERRAL}/accept", DOCTORS | ADMINS,
         World.named_referral, why="referrals._addressee: the named person (doctor1) or an admin"),
    Case("referral: decline, no one named", "POST", f"{REFERRAL}/decline", EVERYONE, World.referral,
         send(REASON), why="referrals._addressee: is_target_side, no role rule"),
    Case("referral: decline, doctor1 named", "POST", f"{REFERRAL}/decline", DOCTORS | ADMINS,
         World.named_referral, send(REASON), why="referrals._addressee: the named person or an admin"),
    Case("referral: complete", "POST", f"{REFERRAL}/complete", EVERYONE, World.accepted_referral,
         send({"note": "已复查，恢复良好。"}), why="referrals.complete: is_target_side, no role rule"),
    Case("referral: cancel", "POST", f"{REFERRAL}/cancel", SPECIALISTS | ADMINS, World.referral, send(REASON),
         why="domain is_issuing_side: its issuer (specialist here), or an admin of the issuing side"),
    # -- live exams: routes/live.py, media/access.py allowed_roles; docs/live.md 'Who may do what' -----------
    Case("live: start", "POST", LIVE, CLINICIANS, World.requested, consult_body, status=201,
         why="routes/live.py _roles: admins take no part"),
    Case("live: list a consult's recordings", "GET", f"{LIVE}/recordings", CLINICIANS, World.requested,
         consult_query, why="routes/live.py _may_watch; docs/live.md '403 for admins'"),
    Case("live: end a running session", "POST", f"{LIVE}/{{session_id}}/end", CLINICIANS, World.session,
         why="routes/live.py end_session: admins take no part"),
    Case("live: end a session its consult's cancel ended", "POST", f"{LIVE}/{{session_id}}/end",
         EVERYONE, World.cancelled_session,
         why="a cancel ends the session (routes/live.py _end_with_consult); ending an ended one answers it"),
    # 409 for those who take part: no frame has come (no sender), a refusal after the role check.
    Case("live: snapshot", "POST", f"{LIVE}/{{session_id}}/snapshot", CLINICIANS, World.session, status=409,
         why="routes/live.py _roles; docs/live.md Captures 'not admins'"),
    Case("live: clip", "POST", f"{LIVE}/{{session_id}}/clip", CLINICIANS, World.session,
         send({"next_seconds": 1}), status=409, why="routes/live.py _roles"),
    Case("live: download a recording", "GET", f"{LIVE}/{{session_id}}/recording", CLINICIANS, World.recording,
         why="routes/live.py _may_watch; docs/live.md 'admins get 403'"),
]
# fmt: on


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PARAMETER.sub(lambda m: values[m.group(1)], template)


def _params() -> list[Any]:
    marks = {
        case.name: [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        for case in ROLE_TABLE
    }
    return [pytest.param(case, marks=marks[case.name], id=case.name) for case in ROLE_TABLE]


@pytest.mark.parametrize("case", _params())
def test_role_matrix(world: World, case: Case) -> None:
    assert case.allowed <= EVERYONE
    refused = [role for role in ROLES if role not in case.allowed]
    allowed = [role for role in ROLES if role in case.allowed]
    wrong: list[tuple[Any, ...]] = []
    ctx = case.setup(world)
    # Refused roles first, all on the same state: a refusal changes nothing, so the first allowed role
    # then still finds it as it was.
    for role in refused:
        user, path = ACTOR[role], _fill(case.path, ctx)
        resource = f"{case.method} {path}"
        before = len(world.denied(user, resource))
        response = world.call(case.method, user, path, **case.request(world, ctx, role))
        if response.status_code != 403 or response.headers.get("content-type") != PROBLEM_JSON:
            wrong.append(("not refused", role, response.status_code, response.text[:200]))
            continue
        rows = world.denied(user, resource)
        if len(rows) != before + 1 or rows[0]["role"] != role:
            wrong.append(("refusal not audited as denied", role, len(rows) - before))
    for number, role in enumerate(allowed):
        if number:  # each further allowed role on a state of its own (the one before changed it)
            ctx = case.setup(world)
        user, path = ACTOR[role], _fill(case.path, ctx)
        resource = f"{case.method} {path}"
        before = len(world.denied(user, resource))
        response = world.call(case.method, user, path, **case.request(world, ctx, role))
        expected = case.status_for.get(role, case.status)
        if response.status_code != expected:
            wrong.append(("allowed role answered", role, response.status_code, expected, response.text[:200]))
        elif len(world.denied(user, resource)) != before:
            wrong.append(("allowed role audited as denied", role))
    assert wrong == [], case.why


# -- operations without a role rule: every role that sees the data may call them -----------------------------


@dataclass(frozen=True)
class Probe:
    """How the sweep calls an operation every role may call, and what each role gets."""

    status: int = 200
    request: Request = no_body


def _stow(_world: World, _ctx: Mapping[str, str], _role: str) -> dict[str, Any]:
    """A new study, stored as the caller's organisation's (any role may store: docs/dicomweb.md)."""
    ds = make_image(rows=8, columns=8)
    boundary = "role-matrix-boundary"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part10(ds)
    body += f"\r\n--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return {
        "content": body,
        "headers": {"Content-Type": content_type},
        "values": {"study": ds.StudyInstanceUID},
    }


def _query(**names: str) -> Request:
    """Query parameters taken from the sweep's values (``name=key``)."""
    return lambda _world, ctx, _role: {"params": {name: ctx[key] for name, key in names.items()}}


STUDY = "/dicomweb/studies/{study}"
SERIES = f"{STUDY}/series/{{series}}"
INSTANCE = f"{SERIES}/instances/{{instance}}"

# Secured operations whose answer does not depend on the caller's role: only on the organisation scope
# (studies, forwarding rows, kiosk patients), on seeing the consult (consults, reports, referrals, live
# sessions: admins see consults of their tree and those addressed to it, and read them), or on nothing.
EVERY_ROLE: dict[tuple[str, str], Probe] = {
    ("GET", "/api/me"): Probe(),
    ("GET", "/api/forwarding"): Probe(),  # tests/teleconsult/api/test_forwarding.py: scoped, any role
    ("GET", "/dicomweb/studies"): Probe(),
    ("POST", "/dicomweb/studies"): Probe(request=_stow),
    ("POST", STUDY): Probe(request=_stow),
    ("GET", "/dicomweb/series"): Probe(),
    ("GET", "/dicomweb/instances"): Probe(),
    ("GET", f"{STUDY}/series"): Probe(),
    ("GET", f"{STUDY}/instances"): Probe(),
    ("GET", f"{SERIES}/instances"): Probe(),
    ("GET", STUDY): Probe(),
    ("GET", SERIES): Probe(),
    ("GET", INSTANCE): Probe(),
    ("GET", f"{STUDY}/metadata"): Probe(),
    ("GET", f"{SERIES}/metadata"): Probe(),
    ("GET", f"{INSTANCE}/metadata"): Probe(),
    ("GET", f"{INSTANCE}/bulkdata/{{path}}"): Probe(),
    ("GET", f"{INSTANCE}/frames/{{frames}}"): Probe(),
    ("GET", f"{INSTANCE}/rendered"): Probe(),
    ("GET", f"{INSTANCE}/frames/{{frames}}/rendered"): Probe(),
    ("GET", f"{STUDY}/thumbnail"): Probe(),
    ("GET", f"{SERIES}/thumbnail"): Probe(),
    ("GET", f"{INSTANCE}/thumbnail"): Probe(),
    ("GET", "/api/studies/{study}/ecg-measurements"): Probe(),
    ("GET", "/api/consults"): Probe(),
    ("GET", CONSULT): Probe(),
    ("GET", "/api/report-templates"): Probe(),
    ("GET", "/api/report-templates/{code}"): Probe(),
    ("GET", REPORT): Probe(),
    ("GET", f"{REPORT}/versions"): Probe(),
    ("GET", f"{REPORT}/versions/{{version}}"): Probe(),
    ("GET", f"{REPORT}/verify"): Probe(),
    ("GET", f"{REPORT}/pdf"): Probe(),
    ("GET", f"{REPORT}/outputs"): Probe(),
    ("GET", "/fhir/DiagnosticReport/{report_id}"): Probe(),
    ("GET", "/fhir/DiagnosticReport"): Probe(request=_query(patient="patient_id")),
    ("GET", "/api/departments"): Probe(),
    ("GET", f"{CONSULT}/referrals"): Probe(),
    ("GET", "/api/referrals"): Probe(),
    ("GET", REFERRAL): Probe(),
    ("GET", "/api/kiosk/patients/{patient_key}/observations"): Probe(),
    ("GET", "/api/kiosk/observations"): Probe(),
    ("GET", "/fhir/Observation/{observation_id}"): Probe(),
    ("GET", "/fhir/Observation"): Probe(request=_query(patient="patient_key")),
    ("GET", "/fhir/Patient/{patient_key}"): Probe(),
    ("GET", "/fhir/Patient"): Probe(request=_query(_id="patient_key")),
    # Admins read a session (without TURN credentials of their own: they take no part).
    ("GET", LIVE): Probe(request=_query(consult_id="consult_id")),
    ("GET", f"{LIVE}/{{session_id}}"): Probe(),
}

# Secured, but not by a user's token: a kiosk's device token (routes/kiosk.py _device).
DEVICE_ONLY = {("POST", "/api/kiosk/measurements")}


def _secured_operations(world: World) -> set[tuple[str, str]]:
    schema = world.client.get("/openapi.json").json()
    return {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    }


def test_every_secured_operation_is_classified(world: World) -> None:
    restricted = {(case.method, case.path) for case in ROLE_TABLE}
    assert restricted.isdisjoint(EVERY_ROLE)
    assert restricted.isdisjoint(DEVICE_ONLY)
    assert DEVICE_ONLY.isdisjoint(EVERY_ROLE)
    secured = _secured_operations(world)
    classified = restricted | set(EVERY_ROLE) | DEVICE_ONLY
    assert sorted(secured - classified) == [], (
        "secured operations in neither ROLE_TABLE nor EVERY_ROLE (nor DEVICE_ONLY): say who may call them"
    )
    assert sorted(classified - secured) == [], "classified operations the schema no longer has"
    assert len(restricted) >= 30


def _wait_for_outputs(world: World, consult_id: str) -> None:
    """The PDF of a signed report is made by the outputs thread, shortly after the signature."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        outputs = world.ok("GET", "specialist", f"/api/consults/{consult_id}/report/outputs")
        if outputs and all(output["status"] == "done" for output in outputs):
            return
        time.sleep(0.05)
    pytest.fail(f"the outputs of consult {consult_id} were not made in time: {outputs}")


def test_every_role_may_call_the_operations_without_a_role_rule(world: World) -> None:
    ctx = world.final()  # a TOWN01 study with a signed consult, ...
    _wait_for_outputs(world, ctx["consult_id"])
    ctx = world.referral(ctx)  # ... a referral of it, ...
    ctx = world.session(ctx)  # ... its live session running, ...
    ctx |= world.kiosk_visit()  # ... and a villager measured at TOWN01's kiosk
    ctx |= {
        "report_id": ctx["consult_id"],
        "patient_id": "P0001",
        "version": "1",
        "code": DRAFT["template"],
        "path": "7FE00010",
        "frames": "1",
    }
    wrong = []
    for (method, template), probe in EVERY_ROLE.items():
        for role in ROLES:
            kwargs = probe.request(world, ctx, role)
            user, path = ACTOR[role], _fill(template, {**ctx, **kwargs.pop("values", {})})
            resource = f"{method} {path}"
            before = len(world.denied(user, resource))
            response = world.call(method, user, path, **kwargs)
            if response.status_code != probe.status or not response.content:
                wrong.append((method, template, role, response.status_code, response.text[:160]))
            elif len(world.denied(user, resource)) != before:
                wrong.append((method, template, role, "audited as denied"))
    assert wrong == []


def test_the_kiosk_intake_takes_no_users_token(world: World) -> None:
    (method, path), resource = next(iter(DEVICE_ONLY)), "POST /api/kiosk/measurements"
    message = _kiosk_message(world)
    for role in ROLES:
        before = len(world.denied("anonymous", resource))
        response = world.call(method, ACTOR[role], path, json=message["json"])
        assert (response.status_code, response.headers["content-type"]) == (401, PROBLEM_JSON), role
        # The route reads no user: the refusal names no one (the bearer is not a kiosk's).
        assert len(world.denied("anonymous", resource)) == before + 1, role
    assert world.client.post(path, **message).status_code == 201  # the kiosk's own token is taken


def test_admins_are_shown_live_sessions_without_turn_credentials(world: World) -> None:
    """Anyone who sees the consult reads its session; TURN credentials are participants' (docs/live.md)."""
    ctx = world.session()
    reads = [(f"{LIVE}/{ctx['session_id']}", None), (LIVE, {"consult_id": ctx["consult_id"]})]
    for role in ROLES:
        for path, params in reads:
            body = world.ok("GET", ACTOR[role], path, params=params)
            session = body[0] if isinstance(body, list) else body
            issued = [server["username"] for server in session["ice_servers"] if server.get("username")]
            owners = [username.rsplit(":", 1)[-1] for username in issued]  # <expiry>:<session>:<user>
            assert owners == ([] if role == ADMIN else [ACTOR[role]]), (path, role)
