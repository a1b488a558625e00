"""STOW-RS: multipart Part 10 uploads, per-instance outcomes, limits and bad bodies."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.conftest import ApiClient
from tests.factories import US_IMAGE, encode, make_ecg, make_image, part10

BOUNDARY = "teleconsult-test-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
REFERENCED, FAILED, REASON, RETRIEVE_URL = "00081199", "00081198", "00081197", "00081190"


def _auth(api: ApiClient, user: str) -> dict[str, str]:
    """Bearer headers, signing in once per user and test (password hashing is slow on purpose)."""
    tokens: dict[str, dict[str, str]] = api.__dict__.setdefault("_dicomweb_tokens", {})
    if user not in tokens:
        tokens[user] = api.headers(user)
    return tokens[user]


def _body(*files: bytes, boundary: str = BOUNDARY) -> bytes:
    parts = [
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n" for data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _post(  # type: ignore[no-untyped-def]
    api: ApiClient,
    body: bytes | Iterator[bytes],
    url: str = "/dicomweb/studies",
    user: str = "sono2",
    **headers: str,
):
    return api.client.post(  # type: ignore[attr-defined]
        url, content=body, headers={**_auth(api, user), "Content-Type": CONTENT_TYPE, **headers}
    )


def _counts(api: ApiClient) -> int:
    return api.store.index.counts()["instances"]


def test_store_instances(api: ApiClient) -> None:
    first = make_image()
    second = make_image(study_instance_uid=first.StudyInstanceUID, seed=2)
    response = _post(api, _body(part10(first), part10(second, ImplicitVRLittleEndian)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    body = response.json()
    assert FAILED not in body
    assert body[RETRIEVE_URL]["Value"][0].endswith(f"/dicomweb/studies/{first.StudyInstanceUID}")
    referenced = body[REFERENCED]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [
        first.SOPInstanceUID,
        second.SOPInstanceUID,
    ]
    assert referenced[0]["00081150"]["Value"] == [US_IMAGE]
    assert referenced[0][RETRIEVE_URL]["Value"][0].endswith(
        f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    )
    record = api.store.index.instance(second.SOPInstanceUID)
    assert record is not None
    assert record.source_organisation == "TOWN02"
    assert record.transfer_syntax_uid == ImplicitVRLittleEndian
    stored = api.store.read_instance(first.SOPInstanceUID)
    assert stored.endswith(encode(first))  # the data set exactly as sent
    # Stored by TOWN02's sonographer: the study is TOWN02's, visible to sono2 and not to sono1.
    search = f"/dicomweb/studies?StudyInstanceUID={first.StudyInstanceUID}"
    assert len(api.client.get(search, headers=_auth(api, "sono2")).json()) == 1  # type: ignore[attr-defined]
    assert api.client.get(search, headers=_auth(api, "sono1")).json() == []  # type: ignore[attr-defined]
    # Sending the same instances again is a success that changes nothing.
    assert _post(api, _body(part10(first))).status_code == 200
    assert _counts(api) == 2


def test_store_audits_each_instance(api: ApiClient) -> None:
    good = make_image(patient_id="P9")
    _post(api, _body(part10(good), b"not dicom"))
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    records = [r for r in audit.query(actor="sono2") if r["action"] == "instance.store"]
    assert sorted(r["outcome"] for r in records) == ["failure", "success"]
    (success,) = [r for r in records if r["outcome"] == "success"]
    assert success["study_instance_uid"] == good.StudyInstanceUID
    assert success["patient_id"] == "P9"
    assert success["interface"] == "dicomweb"


def test_some_stored_is_202_none_stored_is_409(api: ApiClient) -> None:
    good = make_image()
    mismatch = make_image(seed=1)
    response = _post(
        api, _body(part10(good), part10(mismatch, claimed_sop_class_uid="1.2.840.10008.5.1.4.1.1.7"))
    )
    assert response.status_code == 202
    body = response.json()
    (failed,) = body[FAILED]["Value"]
    assert failed[REASON] == {"vr": "US", "Value": [0xA900]}
    assert failed["00081155"]["Value"] == [mismatch.SOPInstanceUID]
    assert len(body[REFERENCED]["Value"]) == 1

    response = _post(api, _body(b"\x00" * 200, b"DICM"))
    assert response.status_code == 409
    body = response.json()
    assert [item[REASON]["Value"][0] for item in body[FAILED]["Value"]] == [0xC000, 0xC000]
    assert REFERENCED not in body
    assert _counts(api) == 1


def test_store_into_a_study_refuses_other_studies(api: ApiClient) -> None:
    ours = make_image()
    other = make_image()
    url = f"/dicomweb/studies/{ours.StudyInstanceUID}"
    response = _post(api, _body(part10(ours), part10(other)), url)
    assert response.status_code == 202
    (failed,) = response.json()[FAILED]["Value"]
    assert failed[REASON]["Value"] == [0xC409]
    assert failed["00081155"]["Value"] == [other.SOPInstanceUID]
    assert _post(api, _body(part10(make_image())), url).status_code == 409
    assert _post(api, _body(part10(ours)), "/dicomweb/studies/1.2.x").status_code == 400


def test_wrong_content_type_is_415(api: ApiClient) -> None:
    data = part10(make_image())
    for content_type in (
        "application/dicom",
        f"multipart/form-data; boundary={BOUNDARY}",
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
    ):
        response = _post(api, _body(data), **{"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.headers["content-type"] == "application/problem+json"
    assert _counts(api) == 0


def test_malformed_multipart_is_400_and_stores_nothing(api: ApiClient) -> None:
    data = part10(make_image())
    whole = _body(data)
    for body, content_type in (
        (whole[:-40], CONTENT_TYPE),  # truncated: no closing boundary
        (b"garbage", CONTENT_TYPE),
        (f"--{BOUNDARY}--\r\n".encode(), CONTENT_TYPE),  # no part
        (whole, 'multipart/related; type="application/dicom"'),  # no boundary
        (_body(data, boundary="other"), CONTENT_TYPE),
    ):
        response = _post(api, body, **{"Content-Type": content_type})
        assert response.status_code == 400, (body[:30], response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert _counts(api) == 0


def test_oversize_body_is_413_by_length_and_while_streaming(api: ApiClient) -> None:
    limit = 4096
    api.client.app.state.settings = api.settings.model_copy(update={"http_max_upload_bytes": limit})  # type: ignore[attr-defined]
    try:
        big = make_image(rows=128, columns=128)
        body = _body(part10(big))
        assert len(body) > limit
        response = _post(api, body)
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        response = _post(api, chunks())
        assert response.status_code == 413
        assert _post(api, _body(part10(make_image(rows=8, columns=8)))).status_code == 200
    finally:
        api.client.app.state.settings = api.settings  # type: ignore[attr-defined]
    assert _counts(api) == 1


def test_large_parts_are_spooled_and_stored(api: ApiClient) -> None:
    ds = make_image(rows=1024, columns=1024)  # 1 MiB of pixels, past the in-memory spool
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = np.arange(1024 * 1024, dtype="<u2").tobytes()
    ecg = make_ecg()
    response = _post(api, _body(part10(ds), part10(ecg)))
    assert response.status_code == 200
    assert api.store.read_instance(ds.SOPInstanceUID).endswith(encode(ds))
    assert not list((api.store.files.root / "tmp").iterdir())


def test_explicit_syntaxes_round_trip_and_missing_token(api: ApiClient) -> None:
    ds = make_image()
    assert _post(api, _body(part10(ds, ExplicitVRLittleEndian)), user="village").status_code == 200
    response = api.client.post(  # type: ignore[attr-defined]
        "/dicomweb/studies", content=_body(part10(ds)), headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status_code == 401
