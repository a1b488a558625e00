"""The contract settings of DESIGN.md, read from the environment and a TOML file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from teleconsult.config import Settings


def test_defaults_are_the_embedded_single_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert (settings.ae_title, settings.dicom_port) == ("TELECONSULT", 11112)
    assert settings.index_url == f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}"
    assert settings.dicom_accept_unknown is False
    assert settings.dicom_peers == []


def test_contract_variable_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    peers = [{"ae_title": "US1", "host": "10.1.1.5", "port": 104, "organisation": "TOWN01"}]
    monkeypatch.setenv("TELECONSULT_HTTP_PORT", "9000")
    monkeypatch.setenv("TELECONSULT_DICOM_PORT", "4242")
    monkeypatch.setenv("TELECONSULT_AE_TITLE", "COUNTY")
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TELECONSULT_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    monkeypatch.setenv("TELECONSULT_DICOM_PEERS", json.dumps(peers))
    monkeypatch.setenv("TELECONSULT_DICOM_ACCEPT_UNKNOWN", "true")
    settings = Settings()
    assert settings.http_port == 9000
    assert settings.dicom_port == 4242
    assert settings.ae_title == "COUNTY"
    assert settings.data_dir == tmp_path
    assert settings.index_url == "postgresql://postgres@127.0.0.1/test"
    assert settings.peer("US1 ").organisation == "TOWN01"
    assert settings.peer("NOPE") is None
    assert settings.dicom_accept_unknown is True


def test_config_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "teleconsult.toml"
    config.write_text(
        'ae_title = "FROMFILE"\nhttp_port = 8100\n'
        '[[dicom_peers]]\nae_title = "PACS"\nhost = "10.0.0.2"\nport = 104\norganisation = "COUNTY"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TELECONSULT_CONFIG_FILE", str(config))
    monkeypatch.setenv("TELECONSULT_HTTP_PORT", "8200")
    settings = Settings()
    assert settings.ae_title == "FROMFILE"
    assert settings.http_port == 8200
    assert settings.peer("PACS").organisation == "COUNTY"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TELECONSULT_AE_TITLE", "A" * 17, "not a valid AE title"),
        ("TELECONSULT_AE_TITLE", "BAD\\AE", "not a valid AE title"),
        ("TELECONSULT_DICOM_PORT", "70000", "dicom_port"),
        ("TELECONSULT_UID_ROOT", "1.2.abc", "TELECONSULT_UID_ROOT"),
        (
            "TELECONSULT_DICOM_PEERS",
            '[{"ae_title":"X","host":"h","port":1,"organisation":"A"},'
            '{"ae_title":"X","host":"h","port":2,"organisation":"B"}]',
            "twice",
        ),
        ("TELECONSULT_DICOM_PEERS", '[{"ae_title":"X"}]', "host"),
    ],
)
def test_unsafe_values_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELECONSULT_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(ValueError, match=r"absent\.toml"):
        Settings()
