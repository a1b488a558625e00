"""The community of tests/conftest.py plus a second county specialist and a city hospital outside it.

COUNTY > TOWN01, TOWN02 > VILLAGE21, and CITY (a separate tree) whose
specialist ``cityspec`` sees none of the county's studies unless a consult
shares one. The overdue thread is off (tests call the check themselves)
and the consult service runs on a clock the test moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from pydicom.dataset import Dataset

import teleconsult.security
from teleconsult.api.consulting import consult_service, report_service
from teleconsult.config import Settings
from teleconsult.consults import ConsultService, ReportService
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD, ApiClient, RecordingBus
from tests.factories import encode, make_image

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests sign in many users: argon2 at its lowest cost (hashes carry their own parameters)."""
    monkeypatch.setattr(
        teleconsult.security, "_HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def app_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(consult_overdue_check_seconds=0)  # type: ignore[no-any-return]


@dataclass
class Consulting:
    """The API with bearer headers per user (signed in once: argon2 is slow on purpose) and helpers."""

    api: ApiClient
    clock: FakeClock
    bus: RecordingBus
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def consults(self) -> ConsultService:
        return consult_service(self.api.client.app)  # type: ignore[attr-defined]

    @property
    def reports(self) -> ReportService:
        return report_service(self.api.client.app)  # type: ignore[attr-defined]

    def headers(self, user: str) -> dict[str, str]:
        if user not in self._headers:
            self._headers[user] = self.api.headers(user)
        return self._headers[user]

    def call(self, method: str, user: str, path: str, json: Any = None, **params: Any) -> Any:
        return self.api.client.request(  # type: ignore[attr-defined]
            method, path, headers=self.headers(user), json=json, params=params or None
        )

    def get(self, user: str, path: str, **params: Any) -> Any:
        return self.call("GET", user, path, **params)

    def post(self, user: str, path: str, json: Any = None) -> Any:
        return self.call("POST", user, path, json)

    def put(self, user: str, path: str, json: Any = None) -> Any:
        return self.call("PUT", user, path, json)

    def store_study(self, organisation: str = "TOWN01", **kwargs: Any) -> Dataset:
        ds = make_image(**kwargs)
        self.api.store.store_instance(
            encode(ds),
            ds.file_meta.TransferSyntaxUID,
            calling_ae_title="TOWNUS",
            source_organisation=organisation,
        )
        return ds

    def request(self, user: str = "sono1", study: Dataset | None = None, **body: Any) -> dict[str, Any]:
        """A new consult (201) on ``study`` (a new TOWN01 study if none)."""
        if "patient_id" not in body:
            body.setdefault("study_instance_uid", (study or self.store_study()).StudyInstanceUID)
        body.setdefault("urgency", "urgent")
        body.setdefault("question", "肝内低回声结节，性质待定，请会诊。")
        response = self.post(user, "/api/consults", body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def events(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return [
            (e.type, e.data)
            for e in self.bus.events
            if e.type.startswith(prefix) and e.type != "instance.stored"
        ]


DRAFT = {
    "template": "abdominal_ultrasound",
    "findings": {
        "liver": {
            "description": "肝脏大小形态正常，右叶见一低回声结节，大小约12×10mm，边界清。",
            "right_lobe_oblique_mm": 128,
        },
        "gallbladder": {"description": "胆囊大小正常，壁光滑。"},
        "kidneys": {"left_length_mm": 105, "right_length_mm": 103.5},
    },
    "impression": "肝右叶低回声结节，建议增强CT进一步检查。",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def consulting(api: ApiClient, clock: FakeClock, bus: RecordingBus) -> Consulting:
    identity = IdentityStore(api.store.index.engine)
    identity.add_user("specialist2", PASSWORD, "specialist", "COUNTY", display_name="赵医生")
    identity.add_organisation("CITY", "City Hospital")
    identity.add_user("cityspec", PASSWORD, "specialist", "CITY")
    helper = Consulting(api=api, clock=clock, bus=bus)
    helper.consults.clock = clock
    return helper


def accepted(consulting: Consulting, **body: Any) -> dict[str, Any]:
    """A TOWN01 consult accepted by ``specialist``."""
    consult = consulting.request(**body)
    response = consulting.post("specialist", f"/api/consults/{consult['id']}/accept")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def final(consulting: Consulting) -> dict[str, Any]:
    """A consult whose report doctor1 drafted and signed (performing) and specialist signed (reviewing)."""
    consult = accepted(consulting)
    path = f"/api/consults/{consult['id']}/report"
    assert consulting.put("doctor1", path, DRAFT).status_code == 200
    assert consulting.post("doctor1", f"{path}/sign").status_code == 200
    response = consulting.post("specialist", f"{path}/sign")
    assert response.status_code == 200, response.text
    return consult
