"""The teleconsult command, called in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.cli import main
from teleconsult.config import Settings
from teleconsult.storage.store import InstanceStore
from tests.factories import encode, make_image


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"TELECONSULT_{name.upper()}" in out
    for contract in (
        "TELECONSULT_DICOM_PEERS",
        "TELECONSULT_DICOM_ACCEPT_UNKNOWN",
        "TELECONSULT_DATABASE_URL",
    ):
        assert contract in out


def test_invalid_settings_exit_2_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELECONSULT_AE_TITLE", "WAY_TOO_LONG_AE_TITLE")
    assert main(["db", "upgrade"]) == 2
    assert "not a valid AE title" in capsys.readouterr().err


def test_db_upgrade_then_find_versions_export_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "data"))
    assert main(["db", "upgrade"]) == 0
    store = InstanceStore(Settings())
    store.open()
    ds = make_image(charset="ISO_IR 192", patient_name="周^杰")
    original = encode(ds)
    store.store_instance(
        original, ExplicitVRLittleEndian, calling_ae_title="US1", source_organisation="TOWN01"
    )
    ds.PatientName = "周^洁"
    store.store_instance(
        encode(ds), ExplicitVRLittleEndian, calling_ae_title="US1", source_organisation="TOWN01"
    )
    store.close()
    capsys.readouterr()

    assert main(["study", "find", "--patient-name", "周*", "--json"]) == 0
    (study,) = json.loads(capsys.readouterr().out)
    assert study["patient_name"] == "周^洁"
    assert study["study_instance_uid"] == ds.StudyInstanceUID
    assert study["modalities_in_study"] == ["US"]

    assert main(["instance", "versions", ds.SOPInstanceUID]) == 0
    out = capsys.readouterr().out
    assert "version 1" in out
    assert "version 2 (current)" in out

    exported = tmp_path / "v1.dcm"
    assert main(["instance", "export", ds.SOPInstanceUID, str(exported), "--version", "1"]) == 0
    assert exported.read_bytes().endswith(original)

    assert main(["store", "check"]) == 0
    assert "checked 2 files, 0 bad" in capsys.readouterr().out


def test_store_check_finds_a_corrupted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "data"))
    store = InstanceStore(Settings())
    store.open()
    ds = make_image()
    store.store_instance(encode(ds), ExplicitVRLittleEndian, calling_ae_title="US1", source_organisation="T")
    path = store.files.path(store.index.instance(ds.SOPInstanceUID).file_key)
    store.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    assert main(["store", "check"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_org_and_user_commands_on_a_fresh_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DESIGN.md: these work before the first `serve` and write what `serve` reads."""
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "fresh"))
    assert main(["org", "add", "COUNTY", "--name", "县医院"]) == 0
    assert main(["org", "add", "TOWN01", "--name", "一号乡镇卫生院", "--parent", "COUNTY"]) == 0
    assert (
        main(["user", "add", "li", "--password", "long-enough-pw", "--role", "specialist", "--org", "COUNTY"])
        == 0
    )
    assert main(["org", "add", "TOWN09", "--name", "x", "--parent", "NOWHERE"]) == 1
    assert (
        main(["user", "add", "li", "--password", "long-enough-pw", "--role", "specialist", "--org", "COUNTY"])
        == 1
    )
    assert main(["user", "add", "wu", "--password", "short", "--role", "specialist", "--org", "COUNTY"]) == 2
    capsys.readouterr()
    assert main(["org", "list"]) == 0
    out = capsys.readouterr().out
    assert "TOWN01" in out
    assert "一号乡镇卫生院" in out
    assert main(["user", "disable", "li"]) == 0
    assert main(["user", "list"]) == 0
    assert "(disabled)" in capsys.readouterr().out
