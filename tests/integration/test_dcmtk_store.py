"""DCMTK as the real sending device: echoscu, storescu, dcmsend."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement

from teleconsult.domain.studies import StudyQuery
from tests.conftest import RunningGateway, require_tool
from tests.factories import (
    DX_PRESENTATION,
    SECONDARY_CAPTURE,
    US_IMAGE,
    make_ecg,
    make_image,
    write_part10,
)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120, check=False)


def _data_set_sha256(path: Path) -> str:
    """SHA-256 of a Part 10 file's data set, as the store computes it."""
    raw = path.read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    return hashlib.sha256(raw[meta_end:]).hexdigest()


def _chinese_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    """One file per character set; returns SOP Instance UID -> (charset, expected name)."""
    folder.mkdir()
    expected: dict[str, tuple[str, str]] = {}
    cases = [
        ("ISO_IR 192", "王^小明", US_IMAGE, "US"),
        ("GB18030", "Zhao^Lei=赵^磊", DX_PRESENTATION, "DX"),
        ("GBK", "钱^芳", SECONDARY_CAPTURE, "OT"),
    ]
    for number, (charset, name, sop_class, modality) in enumerate(cases):
        ds = make_image(
            sop_class, charset=charset, patient_name=name, patient_id=f"C{number}", modality=modality
        )
        write_part10(ds, folder / f"{number}.dcm")
        expected[ds.SOPInstanceUID] = (charset, name)
    # ISO 2022 IR 58 with code extensions, written byte for byte as PS3.5 K.2 shows.
    ds = make_image(charset=["", "ISO 2022 IR 58"], patient_name="x", patient_id="C9")
    ds["PatientName"] = DataElement(
        0x00100010, "PN", b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
    )
    write_part10(ds, folder / "ir58.dcm")
    expected[ds.SOPInstanceUID] = ("ISO 2022 IR 58", "Zhang^XiaoDong=张^小东")
    ecg = make_ecg()
    write_part10(ecg, folder / "ecg.dcm")
    expected[ecg.SOPInstanceUID] = ("ISO_IR 192", "Li^Hua=李^华")
    return expected


def test_echoscu_verifies_a_known_peer_and_is_refused_otherwise(gateway: RunningGateway) -> None:
    echoscu = require_tool("echoscu")
    ok = _run([echoscu, "-aet", "ECHOSCU", "-aec", "TELECONSULT", "127.0.0.1", str(gateway.port)])
    assert ok.returncode == 0, ok.stderr
    refused = _run([echoscu, "-aet", "INTRUDER", "-aec", "TELECONSULT", "127.0.0.1", str(gateway.port)])
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr or "Rejected" in refused.stderr, refused.stderr


def test_storescu_stores_chinese_names_intact(gateway: RunningGateway, tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    expected = _chinese_corpus(tmp_path / "in")

    result = _run(
        [
            storescu,
            "-aet",
            "STORESCU",
            "-aec",
            "TELECONSULT",
            "+sd",
            "127.0.0.1",
            str(gateway.port),
            str(tmp_path / "in"),
        ]
    )

    assert result.returncode == 0, result.stderr
    assert gateway.store.index.counts()["instances"] == len(expected)
    for sop_instance_uid, (charset, _name) in expected.items():
        record = gateway.store.index.instance(sop_instance_uid)
        assert record is not None, f"{charset} instance missing"
        assert record.calling_ae_title == "STORESCU"
        assert record.source_organisation == "TOWN02"
        stored = dcmread(gateway.store.files.path(record.file_key))
        assert stored.SOPInstanceUID == sop_instance_uid
    names = {s.patient_name for s in gateway.store.index.find_studies(StudyQuery())}
    assert names == {name for _, name in expected.values()}
    assert [s.patient_id for s in gateway.store.index.find_studies(StudyQuery(patient_name="张*"))] == ["C9"]
    assert [s.patient_id for s in gateway.store.index.find_studies(StudyQuery(patient_name="赵^磊"))] == [
        "C1"
    ]


def test_dcmsend_mixed_transfer_syntaxes_are_stored_as_received(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    dcmsend = require_tool("dcmsend")
    source = tmp_path / "source"
    corpus = tmp_path / "corpus"
    source.mkdir()
    corpus.mkdir()
    compressors = {
        "jpeg-baseline": [require_tool("dcmcjpeg"), "+eb"],
        "jpeg-lossless": [require_tool("dcmcjpeg"), "+e1"],
        "jpeg-ls": [require_tool("dcmcjpls")],
        "rle": [require_tool("dcmcrle")],
    }
    originals = []
    for label, command in compressors.items():
        plain = write_part10(make_image(rows=64, columns=64, patient_id=label), source / f"{label}.dcm")
        compressed = corpus / f"{label}.dcm"
        converted = _run([*command, str(plain), str(compressed)])
        assert converted.returncode == 0, converted.stderr
        originals.append(compressed)
    originals.append(write_part10(make_image(patient_id="plain"), corpus / "plain.dcm"))

    result = _run(
        [
            dcmsend,
            "-aet",
            "STORESCU",
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(gateway.port),
            "--scan-directories",
            str(corpus),
        ]
    )

    assert result.returncode == 0, result.stderr
    for path in originals:
        sent = dcmread(path)
        record = gateway.store.index.instance(sent.SOPInstanceUID)
        assert record is not None, f"{path.name} missing"
        assert record.transfer_syntax_uid == sent.file_meta.TransferSyntaxUID, path.name
        assert record.sha256 == _data_set_sha256(path), f"{path.name} changed on the way"
        assert gateway.store.files.data_set_sha256(record.file_key) == record.sha256
    assert (
        len({gateway.store.index.instance(dcmread(p).SOPInstanceUID).transfer_syntax_uid for p in originals})
        == 5
    )


@pytest.mark.parametrize("associations", [1, 3])
def test_storescu_resend_is_idempotent(gateway: RunningGateway, tmp_path: Path, associations: int) -> None:
    storescu = require_tool("storescu")
    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(6):
        write_part10(make_image(seed=number), folder / f"{number}.dcm")
    command = [
        storescu,
        "-aet",
        "STORESCU",
        "-aec",
        "TELECONSULT",
        "+sd",
        "127.0.0.1",
        str(gateway.port),
        str(folder),
    ]
    processes = [
        subprocess.Popen(command, env=DCMTK_ENV, stderr=subprocess.PIPE, text=True)
        for _ in range(associations)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert gateway.store.index.counts()["instances"] == 6
    assert len(list((gateway.store.files.root / "dicom").rglob("*.dcm"))) == 6
