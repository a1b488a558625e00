"""POST /api/devices/ecg: who may upload for whom, what is answered, audited and quarantined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teleconsult.domain.studies import StudyQuery
from tests.conftest import ApiClient
from tests.device_adapters.scp_writer import ScpSpec, write_scp
from tests.device_adapters.writers import write_csv, write_wfdb

URL = "/api/devices/ecg"
PROBLEM = "application/problem+json"


def _post(api: ApiClient, user: str | None, files: list[tuple[str, bytes]], **form: str) -> Any:
    headers = api.headers(user) if user else {}
    return api.client.post(  # type: ignore[attr-defined]
        URL,
        headers=headers,
        files=[("file", (name, data, "application/octet-stream")) for name, data in files],
        data=form,
    )


def _audit(api: ApiClient, actor: str) -> list[dict[str, Any]]:
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    return [row for row in audit.query(actor=actor) if row["action"] == "instance.store"]


def test_upload_is_stored_as_the_uploaders_organisation_and_audited(
    api: ApiClient, leads: dict[str, np.ndarray]
) -> None:
    response = _post(api, "sono1", [("cart.scp", write_scp(ScpSpec(leads=leads, patient_id="U1")))])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["organisation"] == "TOWN01"
    assert body["source_format"] == "scp-ecg"
    assert body["outcome"] == "stored"
    assert body["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.9.1.1"
    (study,) = api.store.index.find_studies(StudyQuery(patient_id="U1"))
    assert study.study_instance_uid == body["study_instance_uid"]
    assert study.source_organisation == "TOWN01"
    assert study.patient_name == "王^小明"
    (row,) = _audit(api, "sono1")
    assert row["outcome"] == "success"
    assert row["study_instance_uid"] == body["study_instance_uid"]
    assert row["patient_id"] == "U1"
    assert body["sop_instance_uid"] in row["detail"]
    # the same file again: the same instance
    again = _post(api, "sono1", [("cart.scp", write_scp(ScpSpec(leads=leads, patient_id="U1")))])
    assert again.status_code == 201
    assert again.json()["outcome"] == "duplicate"
    assert again.json()["sop_instance_uid"] == body["sop_instance_uid"]


def test_wfdb_header_and_signal_files_in_one_upload(
    api: ApiClient, leads: dict[str, np.ndarray], tmp_path: Path
) -> None:
    folder = tmp_path / "wfdb"
    write_wfdb(folder, leads)
    files = [(path.name, path.read_bytes()) for path in sorted(folder.iterdir())]
    response = _post(api, "doctor1", files)
    assert response.status_code == 201, response.text
    assert response.json()["source_format"] == "wfdb"


@pytest.mark.parametrize("user", ["sono1", "doctor1", "specialist", "admin"])
def test_every_clinical_role_may_upload(api: ApiClient, user: str, leads: dict[str, np.ndarray]) -> None:
    response = _post(api, user, [("ecg.csv", write_csv(leads, patient_id=f"R-{user}"))])
    assert response.status_code == 201, response.text


def test_without_a_token_401(api: ApiClient, leads: dict[str, np.ndarray]) -> None:
    response = _post(api, None, [("ecg.csv", write_csv(leads))])
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"


def test_for_another_organisation(api: ApiClient, leads: dict[str, np.ndarray]) -> None:
    csv = [("ecg.csv", write_csv(leads, patient_id="O1"))]
    # not in the caller's scope: as if it did not exist
    response = _post(api, "sono1", csv, organisation="TOWN02")
    assert response.status_code == 404
    assert response.json()["code"] == "not-found"
    assert _audit(api, "sono1")[0]["outcome"] == "denied"
    # in scope, but only admins upload for others
    response = _post(api, "specialist", csv, organisation="TOWN01")
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    response = _post(api, "admin", csv, organisation="VILLAGE21")
    assert response.status_code == 201
    assert response.json()["organisation"] == "VILLAGE21"
    assert api.store.index.find_studies(StudyQuery(patient_id="O1"))[0].source_organisation == "VILLAGE21"
    response = _post(api, "admin", csv, organisation="not a code")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.organisation"


@pytest.mark.parametrize(
    ("name", "kind", "code", "message"),
    [
        ("bad.scp", "bad-crc", "ecg-invalid", "CRC"),
        ("short.scp", "truncated", "ecg-invalid", "truncated"),
        ("ragged.csv", "ragged", "ecg-invalid", "ragged rows"),
        ("x.bin", "unknown", "ecg-unknown-format", "not a format teleconsult imports"),
        ("huff.scp", "custom-huffman", "ecg-unsupported", "custom Huffman"),
    ],
)
def test_bad_files_get_422_problem_and_are_quarantined(
    api: ApiClient, leads: dict[str, np.ndarray], name: str, kind: str, code: str, message: str
) -> None:
    scp = write_scp(ScpSpec(leads=leads))
    damaged = bytearray(scp)
    damaged[-3] ^= 0x01
    content = {
        "bad-crc": bytes(damaged),
        "truncated": scp[:999],
        "ragged": write_csv(leads) + b"1,2\n",
        "unknown": b"\x00\x01\x02 nothing",
        "custom-huffman": write_scp(ScpSpec(leads=leads, use_huffman=True, huffman_tables=1)),
    }[kind]
    response = _post(api, "sono2", [(name, content)])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == code
    assert message in problem["detail"]
    assert problem["instance"] == URL
    quarantine = api.settings.quarantine_dir
    assert (quarantine / name).read_bytes() == content
    reason = (quarantine / f"{name}.reason.txt").read_text(encoding="utf-8")
    assert message in reason
    assert "upload by sono2" in reason
    assert "organisation: TOWN02" in reason
    (row,) = _audit(api, "sono2")
    assert row["outcome"] == "failure"
    assert message in row["detail"]


def test_request_problems(api: ApiClient, leads: dict[str, np.ndarray], app_settings: object) -> None:
    response = api.client.post(URL, headers=api.headers("sono1"), data={"organisation": "TOWN01"})  # type: ignore[attr-defined]
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.file"
    response = _post(api, "sono1", [("a.csv", b"x"), ("a.csv", b"y")])
    assert response.status_code == 400
    assert response.json()["code"] == "ecg-bad-request"
    big = api.settings.model_copy(update={"ecg_max_file_bytes": 2048})
    api.client.app.state.settings = big  # type: ignore[attr-defined]
    response = _post(api, "sono1", [("ecg.csv", write_csv(leads))])
    assert response.status_code == 413
    assert response.json()["code"] == "ecg-too-large"


def test_upload_file_names_cannot_reach_outside_the_quarantine(api: ApiClient) -> None:
    response = _post(api, "sono1", [("../../evil.csv", b"I\n1\n")])
    assert response.status_code == 422
    assert (api.settings.quarantine_dir / "evil.csv").is_file()
    assert not (api.settings.data_dir.parent / "evil.csv").exists()
