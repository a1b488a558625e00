"""Any sequence of drafts, signatures and addenda: history only grows, a final report never changes.

A Hypothesis state machine drives the report service (embedded SQLite) as a
township doctor and a county specialist would, in any order. After every
step: a refused step changed nothing; an accepted one only appended
versions and signatures; after the reviewing signature no report version is
added (addenda only); every signature verifies.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from argon2 import PasswordHasher
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import teleconsult.security
from teleconsult.config import Settings
from teleconsult.consults import ConsultService, ReportService
from teleconsult.domain.identity import Principal
from teleconsult.domain.reports import Report, VersionKind
from teleconsult.errors import TeleconsultError
from teleconsult.events import EventBus
from teleconsult.storage.identity import IdentityStore
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_image

IMPRESSIONS = st.sampled_from(["未见明显异常。", "肝右叶低回声结节。", "Suspected haemangioma.", ""])
WRITERS = st.sampled_from(["doctor1", "specialist"])


class ReportMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._hasher = teleconsult.security._HASHER
        teleconsult.security._HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        self.directory = Path(tempfile.mkdtemp(prefix="teleconsult-states-"))
        app_settings = Settings(data_dir=self.directory, consult_overdue_check_seconds=0)
        self.store = InstanceStore(app_settings)
        self.store.open()
        identity = IdentityStore(self.store.index.engine)
        identity.add_organisation("COUNTY", "County")
        identity.add_organisation("TOWN01", "Town", "COUNTY")
        for username, role, organisation in [
            ("specialist", "specialist", "COUNTY"),
            ("doctor1", "township_doctor", "TOWN01"),
        ]:
            identity.add_user(username, "password-123", role, organisation)
        self.principals: dict[str, Principal] = {}
        for username in ("specialist", "doctor1"):
            principal = identity.principal(username)
            assert principal is not None
            self.principals[username] = principal
        ds = make_image()
        self.store.store_instance(
            encode(ds),
            ds.file_meta.TransferSyntaxUID,
            calling_ae_title="TOWNUS",
            source_organisation="TOWN01",
        )
        self.consults = ConsultService(self.store.index.engine, EventBus(), app_settings, identity)
        self.reports = ReportService(self.consults, "a-secret-key-of-at-least-32-characters")
        consult = self.consults.request(
            self.principals["doctor1"],
            urgency="routine",
            question="?",
            study_instance_uid=ds.StudyInstanceUID,
        )
        self.consult_id = consult.consult_id
        self.consults.accept(self.principals["specialist"], self.consult_id)
        self.previous = self._state()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        teleconsult.security._HASHER = self._hasher

    def _state(self) -> Report | None:
        return self.reports.store.report(self.consult_id)

    def _attempt(self, step: object) -> None:
        before = self._state()
        try:
            step()  # type: ignore[operator]
        except TeleconsultError:
            assert self._state() == before, "a refused step changed the report"
            return

    @rule(writer=WRITERS, impression=IMPRESSIONS, liver=st.sampled_from(["肝脏大小正常。", "肝脏增大。"]))
    def draft(self, writer: str, impression: str, liver: str) -> None:
        self._attempt(
            lambda: self.reports.save_draft(
                self.principals[writer],
                self.consult_id,
                template="abdominal_ultrasound",
                findings={"liver": {"description": liver}},
                impression=impression,
            )
        )

    @rule(signer=WRITERS)
    def sign(self, signer: str) -> None:
        self._attempt(lambda: self.reports.sign(self.principals[signer], self.consult_id))

    @rule()
    def submit(self) -> None:
        self._attempt(lambda: self.reports.submit(self.principals["specialist"], self.consult_id))

    @rule(author=WRITERS, text=st.sampled_from(["补充说明。", "Addendum."]))
    def addendum(self, author: str, text: str) -> None:
        self._attempt(
            lambda: self.reports.add_addendum(self.principals[author], self.consult_id, text=text, reason="")
        )

    @invariant()
    def history_only_grows_and_final_stays_final(self) -> None:
        state = self._state()
        previous, self.previous = self.previous, state
        if state is None:
            assert previous is None
            return
        if previous is not None:
            assert state.versions[: len(previous.versions)] == previous.versions
            assert state.signatures[: len(previous.signatures)] == previous.signatures
        final = state.final_version
        event(f"report {state.status.value}")
        if final is not None:
            later = [v for v in state.versions if v.version > final.version]
            assert all(v.kind is VersionKind.ADDENDUM for v in later)
        if state.signatures:
            consult = self.consults.store.get(self.consult_id)
            assert consult is not None
            assert self.reports.verify_report(consult, state).valid


ReportMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
TestReportStates = ReportMachine.TestCase
