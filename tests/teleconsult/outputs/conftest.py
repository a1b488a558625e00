"""The consults community of tests/teleconsult/consults, plus the township PACS and a rule for reports.

TOWN01's PACS (``TOWN01PACS``, marked ``"pacs": true``) and the rule
``reports-home`` (SR and DOC of every organisation to ``source-pacs``) are
what a hospital configures to get signed reports back into the township's
archive. Signers have Chinese display names: ``wangdoc`` (王医生, township
doctor of TOWN01) and ``specialist2`` (赵医生, county specialist).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from teleconsult.api.outputs import report_outputs
from teleconsult.config import Settings
from teleconsult.consults.outputs import ReportOutputs
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD, require_tool
from tests.teleconsult.consults import conftest as consults_conftest
from tests.teleconsult.consults.conftest import DRAFT, Consulting

# The consults fixtures, used here as they are.
_cheap_password_hashing = consults_conftest._cheap_password_hashing
clock = consults_conftest.clock
consulting = consults_conftest.consulting

PACS = "TOWN01PACS"
PERFORMER = "wangdoc"
REVIEWER = "specialist2"


@pytest.fixture
def app_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    peers = [
        {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
        {"ae_title": PACS, "host": "127.0.0.1", "port": 104, "organisation": "TOWN01", "pacs": True},
        {"ae_title": "STORESCU", "host": "127.0.0.1", "port": 104, "organisation": "TOWN02"},
    ]
    rules = [
        {
            "name": "reports-home",
            "from_organisations": ["*"],
            "modalities": ["SR", "DOC"],
            "destination": "source-pacs",
        }
    ]
    return make_settings(  # type: ignore[no-any-return]
        consult_overdue_check_seconds=0, dicom_peers=peers, dicom_forward_rules=rules
    )


@dataclass
class SignedConsult:
    id: str
    study: Dataset
    path: str  # /api/consults/{id}/report


@pytest.fixture
def outputs(consulting: Consulting) -> ReportOutputs:
    identity = IdentityStore(consulting.api.store.index.engine)
    identity.add_user(PERFORMER, PASSWORD, "township_doctor", "TOWN01", display_name="王医生")
    return report_outputs(consulting.api.client.app)  # type: ignore[attr-defined]


def sign_report(consulting: Consulting, outputs: ReportOutputs, *, wait: bool = True) -> SignedConsult:
    """A TOWN01 consult drafted and signed by 王医生 (performing), edited and signed by 赵医生 (final)."""
    study = consulting.store_study()
    consult = consulting.request("sono1", study)
    cid = consult["id"]
    assert consulting.post(REVIEWER, f"/api/consults/{cid}/accept").status_code == 200
    path = f"/api/consults/{cid}/report"
    assert consulting.put(PERFORMER, path, DRAFT).status_code == 200
    assert consulting.post(PERFORMER, f"{path}/sign").status_code == 200
    edited = {**DRAFT, "impression": "肝右叶低回声结节，考虑血管瘤可能，建议增强CT。"}
    assert consulting.put(REVIEWER, path, edited).status_code == 200
    signed = consulting.post(REVIEWER, f"{path}/sign")
    assert signed.status_code == 200, signed.text
    if wait:
        assert outputs.wait_idle(120)
    return SignedConsult(cid, study, path)


def stored(consulting: Consulting, sop_instance_uid: str) -> Dataset:
    """An instance as the store keeps it (Part 10), read back."""
    return dcmread(BytesIO(consulting.api.store.read_instance(sop_instance_uid)))


def dciodvfy(data_set: Dataset, tmp_path: Path) -> list[str]:
    """dicom3tools' IOD check of ``data_set``: its output lines (errors start with "Error")."""
    tool = require_tool("dciodvfy")
    path = tmp_path / f"{data_set.SOPInstanceUID}.dcm"
    data_set.save_as(path, enforce_file_format=True)
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return (result.stdout + result.stderr).splitlines()


def outputs_of(consulting: Consulting, user: str, cid: str) -> Any:
    response = consulting.get(user, f"/api/consults/{cid}/report/outputs")
    assert response.status_code == 200, response.text
    return response.json()


def cjk_font_installed() -> Path | None:
    from teleconsult.consults.outputs.fonts import DEBIAN_CJK_FONTS

    return next((path for path in DEBIAN_CJK_FONTS[:6] if path.is_file()), None)
