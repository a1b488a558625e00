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
from sqlalchemy.engine import make_url
from starlette.websockets import WebSocketDisconnect

from bench.reliability.tcp_proxy import TcpProxy
from teleconsult.api.app import create_app
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD, RunningGateway
from tests.factories import encode, make_image
from tests.reliability.one_by_one import c_store, stow

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
        assert c_store(gateway, before)[0] == 0x0000

        proxy.down()
        assert c_store(gateway, during)[0] == 0xA701
        assert stow(client, token, during_stow).status_code == 503
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
        assert c_store(gateway, during)[0] == 0x0000
        assert stow(client, token, after_stow).status_code == 200
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
