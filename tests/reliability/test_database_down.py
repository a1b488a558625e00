"""PostgreSQL going away under a running gateway and API, then back: refused cleanly, no restart needed.

The index is reached through a loopback proxy that resets every connection
and refuses new ones while "down", as a database server that stopped (or
restarted) does. While it is down a C-STORE is answered 0xA701 (out of
resources, the peer may retry) and never success; DICOMweb answers 503
problem+json; nothing is stored half. Once it is back the same gateway and
app store and answer again, with no restart, and the refused instance is
stored when the device sends it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy.engine import make_url
from starlette.websockets import WebSocketDisconnect

from teleconsult.api.app import create_app
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD, RunningGateway
from tests.factories import US_IMAGE, encode, make_image, part10
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgresql


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    if not database_url.startswith("postgresql"):
        pytest.skip("a database server to lose: PostgreSQL only")
    url = make_url(database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def _proxied(database_url: str, proxy: TcpProxy) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _c_store(gateway: RunningGateway, ds: Dataset) -> int:
    """One instance over its own association from TOWNUS, as an ultrasound sends it; the status."""
    ae = AE(ae_title="TOWNUS")
    ae.add_requested_context(US_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.settings.ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def _stow(client: TestClient, token: str, ds: Dataset) -> int:
    boundary = "outage"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part10(ds)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/dicomweb/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )
    if response.status_code >= 500:
        assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code


def test_an_outage_is_refused_cleanly_and_recovered_without_a_restart(
    start: Callable[..., RunningGateway], database_url: str, proxy: TcpProxy
) -> None:
    gateway = start(database_url=_proxied(database_url, proxy))
    store = gateway.store
    identity = IdentityStore(store.index.engine)
    identity.add_organisation("COUNTY", "County Hospital")
    identity.add_organisation("TOWN01", "Township 1", "COUNTY")
    identity.add_user("sono1", PASSWORD, "sonographer", "TOWN01")
    before, during, during_stow, after_stow = (make_image(seed=seed) for seed in range(4))
    with TestClient(create_app(gateway.settings, store)) as client:
        signed_in = client.post("/api/auth/token", data={"username": "sono1", "password": PASSWORD})
        token = signed_in.json()["access_token"]
        assert _c_store(gateway, before) == 0x0000

        proxy.down()
        assert _c_store(gateway, during) == 0xA701
        assert _stow(client, token, during_stow) == 503
        search = client.get("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"})
        assert search.status_code == 503, search.text
        assert search.json()["code"] == "index-unavailable"
        assert "retry" in search.json()["detail"]
        assert search.headers["retry-after"] == "5"
        documented = client.get("/openapi.json").json()["paths"]["/dicomweb/studies"]["get"]["responses"]
        assert "Retry-After" in documented["503"]["headers"]
        with client.websocket_connect("/api/events") as ws:
            ws.send_json({"type": "auth", "token": token})
            error = ws.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert error["problem"]["code"] == "index-unavailable"
        assert closed.value.code == 1011

        proxy.up()
        # The same processes, no restart: the device sends the refused instance again.
        assert _c_store(gateway, during) == 0x0000
        assert _stow(client, token, after_stow) == 200
        search = client.get("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"})
        assert search.status_code == 200
        found = {study["0020000D"]["Value"][0] for study in search.json()}
    assert found == {ds.StudyInstanceUID for ds in (before, during, after_stow)}
    # What was refused left nothing behind; what was stored is whole.
    assert during_stow.StudyInstanceUID not in found
    assert list((gateway.settings.data_dir / "tmp").iterdir()) == []
    for ds in (before, during, after_stow):
        record = store.index.instance(ds.SOPInstanceUID)
        assert record is not None
        sent = hashlib.sha256(encode(ds)).hexdigest()
        assert store.files.data_set_sha256(record.file_key) == sent
