"""One instance at a time, as an ultrasound sends it over DICOM and a browser over STOW-RS.

For the tests that take a dependency away (the index, the disk) and look at
each answer.
"""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests.conftest import RunningGateway
from tests.factories import US_IMAGE, part10

__all__ = ["c_store", "stow"]

_BOUNDARY = "one-by-one"


def c_store(gateway: RunningGateway, ds: Dataset) -> tuple[int, str]:
    """One instance over its own association from TOWNUS: the status and the Error Comment."""
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(US_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(ds)
        return int(answer.Status), str(answer.get("ErrorComment", ""))
    finally:
        assoc.release()


def stow(client: TestClient, token: str, ds: Dataset) -> httpx.Response:
    """One instance in one STOW-RS request; a refusal for want of resources must be problem+json."""
    body = (
        f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part10(ds)
        + f"\r\n--{_BOUNDARY}--\r\n".encode()
    )
    response = client.post(
        "/dicomweb/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}',
            "Accept": "application/dicom+json",
        },
    )
    if response.status_code >= 500:
        assert response.headers["content-type"] == "application/problem+json", response.text
    return response
