"""WADO-RS: instances as stored or transcoded, metadata and bulk data, frames, rendering, scope."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from teleconsult.api.dicomweb import inflation
from tests.conftest import ApiClient
from tests.factories import DX_PRESENTATION, US_MULTIFRAME, encode, make_ecg, make_image

DICOM = 'multipart/related; type="application/dicom"'


def _auth(api: ApiClient, user: str) -> dict[str, str]:
    """Bearer headers, signing in once per user and test (password hashing is slow on purpose)."""
    tokens: dict[str, dict[str, str]] = api.__dict__.setdefault("_dicomweb_tokens", {})
    if user not in tokens:
        tokens[user] = api.headers(user)
    return tokens[user]


def _get(api: ApiClient, url: str, user: str = "sono1", **headers: str):  # type: ignore[no-untyped-def]
    return api.client.get(url, headers={**_auth(api, user), **headers})  # type: ignore[attr-defined]


def _store(
    api: ApiClient, ds: Dataset, organisation: str = "TOWN01", syntax: str = ExplicitVRLittleEndian
) -> Dataset:
    if syntax != ExplicitVRLittleEndian and not ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.file_meta.TransferSyntaxUID = syntax
    api.store.store_instance(
        _encoded(ds, syntax), syntax, calling_ae_title="TOWNUS", source_organisation=organisation
    )
    return ds


def _encoded(ds: Dataset, syntax: str) -> bytes:
    if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        return encode(ds, syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data[144 + int.from_bytes(data[140:144], "little") :]


def _parts(response) -> list[tuple[dict[str, str], bytes]]:  # type: ignore[no-untyped-def]
    """(headers, body) of each part of a multipart/related response."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    body = response.content
    assert body.endswith(f"--{boundary}--\r\n".encode())
    parts = []
    for chunk in body.split(f"--{boundary}".encode())[1:-1]:
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append(({k.lower(): v for k, v in headers.items()}, content[:-2]))
    return parts


def _url(ds: Dataset, suffix: str = "") -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        + suffix
    )


def _multiframe(frames: int = 3, rows: int = 16, columns: int = 12) -> Dataset:
    ds = make_image(US_MULTIFRAME, rows=rows, columns=columns)
    ds.NumberOfFrames = frames
    ds.PixelData = np.arange(frames * rows * columns, dtype=np.uint8).tobytes()
    return ds


def _dr(rows: int = 64, columns: int = 48) -> Dataset:
    ds = make_image(DX_PRESENTATION, modality="DX", rows=rows, columns=columns)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 0, 400
    pixels = np.linspace(0, 4095, rows * columns).astype("<u2").reshape(rows, columns)
    ds.PixelData = pixels.tobytes()
    return ds


def test_retrieve_instance_as_stored(api: ApiClient) -> None:
    ds = _store(api, make_image())
    response = _get(api, _url(ds))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(f"{DICOM}; boundary=")
    assert int(response.headers["content-length"]) == len(response.content)
    ((headers, body),) = _parts(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert body == api.store.read_instance(ds.SOPInstanceUID)
    for accept in (f"{DICOM}; transfer-syntax=*", "*/*", 'multipart/related; type="*/*"', ""):
        assert _parts(_get(api, _url(ds), accept=accept))[0][1] == body, accept


def test_an_instance_over_a_mebibyte_is_streamed_with_the_same_framing(api: ApiClient) -> None:
    """Small answers are read whole before sending, larger ones streamed block by block: same bytes out."""
    large = _store(api, make_image(rows=1024, columns=1536))  # 1.5 MiB of pixels
    stored = api.store.read_instance(large.SOPInstanceUID)
    assert len(stored) > 1 << 20
    with api.client.stream("GET", _url(large), headers=_auth(api, "sono1")) as response:  # type: ignore[attr-defined]
        assert response.status_code == 200
        pieces = list(response.iter_raw())
    assert int(response.headers["content-length"]) == sum(len(piece) for piece in pieces)
    assert len(pieces) > 1  # sent as it was read, not as one body
    response._content = b"".join(pieces)
    ((headers, body),) = _parts(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert int(headers["content-length"]) == len(stored)
    assert body == stored


def test_a_deflated_data_set_too_large_inflated_is_sent_as_stored_but_not_parsed(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deflate bomb (2 MB stored, gigabytes inflated) must not be inflated whole by a metadata request."""
    image = make_image(rows=1024, columns=1536)
    image.PixelData = bytes(len(image.PixelData))  # 1.5 MiB of zeros
    ds = _store(api, image, syntax=DeflatedExplicitVRLittleEndian)
    stored = api.store.read_instance(ds.SOPInstanceUID)
    assert len(stored) < 64 << 10
    record = api.store.index.instance(ds.SOPInstanceUID)
    assert record is not None
    assert record.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    monkeypatch.setattr(inflation, "MAX_INFLATED_BYTES", 1 << 20)

    ((_, body),) = _parts(_get(api, _url(ds)))
    assert body == stored
    for suffix in ("/metadata", "/frames/1", "/rendered", "/bulkdata/7fe00010"):
        accept = {"/metadata": "application/dicom+json", "/rendered": "image/png"}.get(suffix, "*/*")
        response = _get(api, _url(ds, suffix), accept=accept)
        assert response.status_code == 422, (suffix, response.status_code, response.text[:200])
        assert response.headers["content-type"] == "application/problem+json"
        assert "inflates to more than 1 MiB" in response.json()["detail"], suffix

    monkeypatch.setattr(inflation, "MAX_INFLATED_BYTES", 64 << 20)
    metadata = _get(api, _url(ds, "/metadata"), accept="application/dicom+json")
    assert metadata.status_code == 200
    assert metadata.json()[0]["00080018"]["Value"] == [ds.SOPInstanceUID]
    rendered = _get(api, _url(ds, "/rendered"), accept="image/png")
    assert rendered.status_code == 200, rendered.text[:200]
    assert Image.open(io.BytesIO(rendered.content)).size == (1536, 1024)


def test_retrieve_study_and_series(api: ApiClient) -> None:
    first = _store(api, make_image())
    second = make_image(
        study_instance_uid=first.StudyInstanceUID, series_instance_uid=first.SeriesInstanceUID
    )
    second.InstanceNumber = 2
    _store(api, second)
    other_series = _store(api, make_image(study_instance_uid=first.StudyInstanceUID, seed=3))
    study = _parts(_get(api, f"/dicomweb/studies/{first.StudyInstanceUID}"))
    assert {dcmread(io.BytesIO(body)).SOPInstanceUID for _, body in study} == {
        first.SOPInstanceUID,
        second.SOPInstanceUID,
        other_series.SOPInstanceUID,
    }
    series = _parts(_get(api, f"/dicomweb/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"))
    assert len(series) == 2


def test_transcoding_to_explicit_little_endian(api: ApiClient) -> None:
    implicit = _store(api, make_image(), syntax=ImplicitVRLittleEndian)
    ((headers, body),) = _parts(
        _get(api, _url(implicit), accept=f"{DICOM}; transfer-syntax={ExplicitVRLittleEndian}")
    )
    assert headers["content-type"].endswith(ExplicitVRLittleEndian)
    result = dcmread(io.BytesIO(body))
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.PixelData == implicit.PixelData
    assert result.SOPInstanceUID == implicit.SOPInstanceUID

    explicit = _store(api, make_image(seed=1))
    ((_, body),) = _parts(
        _get(api, _url(explicit), accept=f"{DICOM}; transfer-syntax={ImplicitVRLittleEndian}")
    )
    assert dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_instances_are_decompressed_on_request(api: ApiClient, syntax: str) -> None:
    source = make_image(rows=32, columns=32, seed=5)
    pixels = source.pixel_array.copy()
    source.compress(syntax)
    _store(api, source, syntax=syntax)
    stored = _parts(_get(api, _url(source)))[0]
    assert stored[0]["content-type"].endswith(syntax)
    ((_headers, body),) = _parts(
        _get(api, _url(source), accept=f"{DICOM}; transfer-syntax={ExplicitVRLittleEndian}")
    )
    result = dcmread(io.BytesIO(body))
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert result.SOPInstanceUID == source.SOPInstanceUID
    assert np.array_equal(result.pixel_array, pixels)
    # Preferences are tried in order: the stored syntax first when it is listed.
    accept = f"{DICOM}; transfer-syntax={syntax}, {DICOM}; transfer-syntax={ExplicitVRLittleEndian}"
    assert _parts(_get(api, _url(source), accept=accept))[0][0]["content-type"].endswith(syntax)


def test_unproducible_transfer_syntax_or_media_type_is_406(api: ApiClient) -> None:
    ds = _store(api, make_image())
    for accept in (
        f"{DICOM}; transfer-syntax={JPEGBaseline8Bit}",
        "application/zip",
        "application/dicom+json",
    ):
        response = _get(api, _url(ds), accept=accept)
        assert response.status_code == 406, accept
        assert response.headers["content-type"] == "application/problem+json"


def test_metadata_with_bulk_data_uris(api: ApiClient) -> None:
    ds = _store(api, make_image())
    response = _get(api, _url(ds, "/metadata"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    (metadata,) = response.json()
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "Wang^XiaoMing", "Ideographic": "王^小明"}]
    assert metadata["00080005"]["Value"] == ["ISO_IR 192"]
    assert metadata["00280010"] == {"vr": "US", "Value": [32]}
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    assert pixel_uri.endswith(_url(ds, "/bulkdata/7FE00010"))
    bulk = _get(api, pixel_uri.removeprefix("http://testserver"))
    ((headers, body),) = _parts(bulk)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert body == ds.PixelData
    single = _get(api, pixel_uri.removeprefix("http://testserver"), accept="application/octet-stream")
    assert single.headers["content-type"] == "application/octet-stream"
    assert single.content == ds.PixelData
    assert len(_get(api, f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata").json()) == 1
    assert (
        len(
            _get(
                api, f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
            ).json()
        )
        == 1
    )


def test_waveform_bulk_data_inside_a_sequence(api: ApiClient) -> None:
    ecg = _store(api, make_ecg())
    (metadata,) = _get(api, _url(ecg, "/metadata")).json()
    waveform = metadata["54000100"]["Value"][0]["54001010"]
    assert waveform["BulkDataURI"].endswith("/bulkdata/54000100/0/54001010")
    ((_, body),) = _parts(_get(api, waveform["BulkDataURI"].removeprefix("http://testserver")))
    assert body == ecg.WaveformSequence[0].WaveformData
    for path, status in (("54000100/5/54001010", 404), ("00100010", 404), ("zz", 400), ("54000100/x", 400)):
        assert _get(api, _url(ecg, f"/bulkdata/{path}")).status_code == status, path


def test_frames(api: ApiClient) -> None:
    ds = _store(api, _multiframe())
    response = _get(api, _url(ds, "/frames/1,3"))
    assert response.status_code == 200
    parts = _parts(response)
    frame = 16 * 12
    assert [body for _, body in parts] == [ds.PixelData[:frame], ds.PixelData[2 * frame :]]
    assert (
        parts[0][0]["content-type"] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    )
    octets = 'multipart/related; type="application/octet-stream"'
    assert _get(api, _url(ds, "/frames/2"), accept=octets).status_code == 200
    assert _get(api, _url(ds, "/frames/2"), accept=f"{octets}; transfer-syntax=*").status_code == 200
    assert (
        _get(api, _url(ds, "/frames/2"), accept=f"{octets}; transfer-syntax={RLELossless}").status_code == 406
    )
    for frames in ("4", "0", "1,x", "-1", ""):
        response = _get(api, _url(ds, f"/frames/{frames}"))
        assert response.status_code in (400, 404), frames
        if frames:
            assert response.status_code == 400, frames
            assert response.headers["content-type"] == "application/problem+json"


def test_frames_of_a_compressed_instance_are_decoded(api: ApiClient) -> None:
    ds = _multiframe()
    pixels = ds.pixel_array.copy()
    ds.compress(RLELossless)
    _store(api, ds, syntax=RLELossless)
    parts = _parts(_get(api, _url(ds, "/frames/2,3")))
    assert parts[0][1] == pixels[1].tobytes()
    assert parts[1][1] == pixels[2].tobytes()


def _png(response) -> np.ndarray:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"] == "image/png", response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_rendered_jpeg_png_window_viewport(api: ApiClient) -> None:
    ds = _store(api, _dr())
    jpeg = _get(api, _url(ds, "/rendered"))
    assert jpeg.status_code == 200
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (48, 64)
    image = _png(_get(api, _url(ds, "/rendered"), accept="image/png"))
    # The data set's window (center 0 HU, width 400) after the rescale (-1024): only the middle is grey.
    values = np.linspace(0, 4095, 64 * 48).reshape(64, 48) - 1024
    assert image[values < -200].max() == 0
    assert image[values > 200].min() == 255
    wide = _png(_get(api, _url(ds, "/rendered?window=1024,4096&accept=image/png")))
    assert 0 < wide.mean() < 255
    assert wide[-1, -1] > 200
    small = _get(api, _url(ds, "/rendered?viewport=24,24&quality=50"))
    assert Image.open(io.BytesIO(small.content)).size == (18, 24)
    for query in ("window=1,0", "window=a,b", "viewport=0,10", "quality=101", "window=1,2,cubic"):
        assert _get(api, _url(ds, f"/rendered?{query}")).status_code == 400, query
    assert _get(api, _url(ds, "/rendered"), accept="image/gif").status_code == 406
    # A source region is cut to the image; one that reaches far past it is not padded out.
    part = _get(api, _url(ds, "/rendered?viewport=10,10,40,56,100000,100000&accept=image/png"))
    assert part.status_code == 200, part.text
    assert Image.open(io.BytesIO(part.content)).size == (10, 10)  # the 8x8 corner left, fitted
    outside = _get(api, _url(ds, "/rendered?viewport=10,10,91347,76128,5,5"))
    assert outside.status_code == 400
    assert "outside the 48x64 image" in outside.json()["detail"]


def test_monochrome1_is_inverted_and_rgb_kept(api: ApiClient) -> None:
    ds = make_image(rows=4, columns=4)
    ds.PixelData = bytes([0] * 8 + [255] * 8)
    ds.PhotometricInterpretation = "MONOCHROME1"
    _store(api, ds)
    image = _png(_get(api, _url(ds, "/rendered?accept=image/png")))
    assert image[0, 0] == 255
    assert image[3, 3] == 0
    rgb = make_image(rows=2, columns=2)
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.PixelData = bytes([255, 0, 0] * 4)
    _store(api, rgb)
    assert _png(_get(api, _url(rgb, "/rendered?accept=image/png")))[0, 0].tolist() == [255, 0, 0]


def test_rendered_frames_and_thumbnails(api: ApiClient) -> None:
    ds = _store(api, _multiframe())
    assert _get(api, _url(ds, "/frames/3/rendered")).headers["content-type"] == "image/jpeg"
    assert _get(api, _url(ds, "/frames/4/rendered")).status_code == 400
    assert _get(api, _url(ds, "/frames/1,2/rendered")).status_code == 400
    large = _store(api, make_image(rows=300, columns=200))
    for url in (
        f"/dicomweb/studies/{large.StudyInstanceUID}/thumbnail",
        f"/dicomweb/studies/{large.StudyInstanceUID}/series/{large.SeriesInstanceUID}/thumbnail",
        _url(large, "/thumbnail"),
    ):
        response = _get(api, url)
        assert response.headers["content-type"] == "image/jpeg", url
        assert max(Image.open(io.BytesIO(response.content)).size) == 128


def test_non_images_cannot_be_rendered(api: ApiClient) -> None:
    ecg = _store(api, make_ecg())
    for suffix in ("/rendered", "/thumbnail", "/frames/1"):
        response = _get(api, _url(ecg, suffix))
        assert response.status_code == 406, suffix
        assert response.headers["content-type"] == "application/problem+json"


def test_other_organisations_study_is_404_and_audited_as_denied(api: ApiClient) -> None:
    theirs = _store(api, make_image(patient_id="T2"), "TOWN02")
    missing = make_image()
    suffixes = ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/bulkdata/7FE00010")
    for suffix in suffixes:
        denied = _get(api, _url(theirs, suffix), "sono1")
        absent = _get(api, _url(missing, suffix), "sono1")
        assert denied.status_code == absent.status_code == 404, suffix
        assert denied.headers["content-type"] == "application/problem+json"
        assert denied.json()["detail"].replace(theirs.StudyInstanceUID, "S").replace(
            theirs.SeriesInstanceUID, "E"
        ).replace(theirs.SOPInstanceUID, "I") == absent.json()["detail"].replace(
            missing.StudyInstanceUID, "S"
        ).replace(missing.SeriesInstanceUID, "E").replace(missing.SOPInstanceUID, "I")
    assert _get(api, f"/dicomweb/studies/{theirs.StudyInstanceUID}", "sono1").status_code == 404
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    denials = audit.query(actor="sono1", outcome="denied")
    assert len(denials) == len(suffixes) + 1
    assert {d["study_instance_uid"] for d in denials} == {theirs.StudyInstanceUID}
    assert {d["patient_id"] for d in denials} == {"T2"}
    # The county sees it, and its retrieve is audited as a success.
    assert _get(api, _url(theirs), "specialist").status_code == 200
    (success,) = [r for r in audit.query(actor="specialist") if r["action"] == "study.read"]
    assert success["outcome"] == "success"
    assert success["patient_id"] == "T2"
    assert success["interface"] == "dicomweb"


def test_invalid_uids_and_missing_token(api: ApiClient) -> None:
    for url in (
        "/dicomweb/studies/1.2.x",
        "/dicomweb/studies/1.2.3/series/1.02/metadata",
        "/dicomweb/studies/1.2.3/series/1.2/instances/" + "1" * 70 + "/frames/1",
    ):
        response = _get(api, url)
        assert response.status_code == 400, url
        assert response.json()["code"] == "invalid-uid"
    response = api.client.get("/dicomweb/studies/1.2.3/metadata")  # type: ignore[attr-defined]
    assert response.status_code == 401
