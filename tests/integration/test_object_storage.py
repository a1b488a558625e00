"""The store on S3-compatible object storage (moto's server on loopback) through the real interfaces.

DCMTK storescu into a gateway whose files are objects, then getscu and
movescu back; DICOMweb retrieve, frames and rendering read through the S3
backend; and with the object storage gone, C-STORE is refused with 0xA702
and STOW-RS with 503, indexing nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from teleconsult.config import Settings, bucket_and_prefix
from teleconsult.storage.files import content_key
from tests.conftest import ApiClient, RunningGateway, require_tool
from tests.factories import US_MULTIFRAME, encode, make_image, part10, write_part10
from tests.s3server import S3Server, aws_environment, running_server
from tests.teleconsult.api.test_wado import _parts

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
PREFIX = "county"


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_environment(monkeypatch)


@pytest.fixture
def s3() -> Iterator[S3Server]:
    yield from running_server()


def _s3_options(s3: S3Server) -> dict[str, object]:
    return {"storage_url": f"s3://{s3.bucket()}/{PREFIX}", "s3_endpoint_url": s3.url}


@pytest.fixture
def app_settings(make_settings, s3: S3Server) -> Settings:  # type: ignore[no-untyped-def]
    """The ``store`` and ``api`` fixtures of conftest, with the files in S3."""
    return make_settings(**_s3_options(s3))  # type: ignore[no-any-return]


def _objects(s3: S3Server, settings: Settings) -> dict[str, int]:
    bucket, prefix = bucket_and_prefix(settings.storage_url or "")
    listing = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/dicom/")
    return {
        item["Key"].removeprefix(f"{prefix}/dicom/"): item["Size"] for item in listing.get("Contents", [])
    }


def _data_set_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw[144 + int.from_bytes(raw[140:144], "little") :]).hexdigest()


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _multiframe(frames: int = 4, rows: int = 64, columns: int = 48) -> Dataset:
    ds = make_image(US_MULTIFRAME, rows=rows, columns=columns)
    ds.NumberOfFrames = frames
    ds.PixelData = np.arange(frames * rows * columns, dtype=np.uint32).astype(np.uint8).tobytes()
    return ds


def test_storescu_into_s3_then_getscu_and_movescu_back(start, s3: S3Server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    move_port = _free_port()
    peers = [
        {"ae_title": "STORESCU", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
        {"ae_title": "GETSCU", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
        {"ae_title": "MOVESCU", "host": "127.0.0.1", "port": move_port, "organisation": "TOWN01"},
    ]
    gateway: RunningGateway = start(dicom_peers=peers, **_s3_options(s3))
    study = generate_uid()
    sent = tmp_path / "sent"
    sent.mkdir()
    digests = set()
    for number, ds in enumerate(
        [
            make_image(study_instance_uid=study, seed=1),
            make_image(study_instance_uid=study, seed=2),
            _multiframe(frames=8, rows=256, columns=256),
        ]
    ):
        ds.StudyInstanceUID = study
        path = write_part10(ds, sent / f"{number}.dcm")
        digests.add(_data_set_sha256(path.read_bytes()))

    stored = _run(
        [require_tool("storescu"), "-aet", "STORESCU", "-aec", "TELECONSULT", "127.0.0.1", str(gateway.port)]
        + [str(path) for path in sorted(sent.iterdir())]
    )

    assert stored.returncode == 0, stored.stderr
    objects = _objects(s3, gateway.settings)
    assert set(objects) == {content_key(digest) for digest in digests}
    assert not (Path(gateway.settings.data_dir) / "dicom").exists()

    got = tmp_path / "got"
    got.mkdir()
    result = _run(
        [
            require_tool("getscu"),
            "-S",
            "-aet",
            "GETSCU",
            "-aec",
            "TELECONSULT",
            "-od",
            str(got),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(gateway.port),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert {_data_set_sha256(path.read_bytes()) for path in got.iterdir()} == digests

    moved = tmp_path / "moved"
    moved.mkdir()
    result = _run(
        [
            require_tool("movescu"),
            "-S",
            "-aet",
            "MOVESCU",
            "-aem",
            "MOVESCU",
            "-aec",
            "TELECONSULT",
            "--port",
            str(move_port),
            "-od",
            str(moved),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(gateway.port),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert {_data_set_sha256(path.read_bytes()) for path in moved.iterdir()} == digests


def _auth(api: ApiClient) -> dict[str, str]:
    return api.headers("sono1")


def test_wado_rs_reads_through_the_object_storage(api: ApiClient, s3: S3Server) -> None:
    ds = _multiframe()
    data = encode(ds)
    api.store.store_instance(
        data, ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    key = api.store.index.instance(ds.SOPInstanceUID).file_key  # type: ignore[union-attr]
    assert key in _objects(s3, api.settings)
    headers = _auth(api)
    url = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    cache = Path(api.settings.data_dir).resolve() / "cache" / "s3"

    response = api.client.get(url, headers=headers)  # type: ignore[attr-defined]

    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    ((part_headers, body),) = _parts(response)
    assert body.endswith(data)
    assert int(part_headers["content-length"]) == len(body)
    assert not (cache / key).exists(), "a whole instance is streamed from S3, not copied to the cache"

    frames = api.client.get(f"{url}/frames/2,4", headers=headers)  # type: ignore[attr-defined]
    assert frames.status_code == 200
    frame_size = 64 * 48
    assert [content for _, content in _parts(frames)] == [
        ds.PixelData[frame_size : 2 * frame_size],
        ds.PixelData[3 * frame_size : 4 * frame_size],
    ]
    assert (cache / key).is_file(), "frames are cut from a cached copy"

    rendered = api.client.get(f"{url}/frames/3/rendered", headers=headers)  # type: ignore[attr-defined]
    assert rendered.status_code == 200
    assert Image.open(io.BytesIO(rendered.content)).size == (48, 64)
    metadata = api.client.get(f"{url}/metadata", headers=headers)  # type: ignore[attr-defined]
    assert metadata.status_code == 200
    assert metadata.json()[0]["00080018"]["Value"] == [ds.SOPInstanceUID]
    study = api.client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=headers)  # type: ignore[attr-defined]
    assert _parts(study)[0][1] == body


def test_with_the_object_storage_down_c_store_and_stow_rs_are_refused(
    api: ApiClient, start, s3: S3Server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gateway: RunningGateway = start(
        storage_url=api.settings.storage_url, s3_endpoint_url=api.settings.s3_endpoint_url
    )
    stored = make_image()
    api.store.store_instance(
        encode(stored), ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation="TOWN01"
    )
    headers = _auth(api)
    s3.stop()

    refused = make_image()
    result = _run(
        [
            require_tool("storescu"),
            "-d",
            "-aet",
            "STORESCU",
            "-aec",
            "TELECONSULT",
            "127.0.0.1",
            str(gateway.port),
            str(write_part10(refused, tmp_path / "refused.dcm")),
        ]
    )
    assert "DIMSE Status                  : 0xa702: Refused: Out of resources" in result.stderr, result.stderr
    assert "Object storage unavailable; resend later" in result.stderr
    assert gateway.store.index.instance(refused.SOPInstanceUID) is None

    boundary = "s3-down"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part10(refused)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = api.client.post(  # type: ignore[attr-defined]
        "/dicomweb/studies",
        content=body,
        headers={**headers, "Content-Type": content_type},
    )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "storage-unavailable"
    assert api.store.index.instance(refused.SOPInstanceUID) is None

    url = (
        f"/dicomweb/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}"
        f"/instances/{stored.SOPInstanceUID}"
    )
    assert api.client.get(url, headers=headers).status_code == 503  # type: ignore[attr-defined]
    assert api.client.get(f"{url}/rendered", headers=headers).status_code == 503  # type: ignore[attr-defined]
