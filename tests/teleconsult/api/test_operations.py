"""Liveness, readiness and the metrics an operator scrapes."""

from __future__ import annotations

import re

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.api import operations
from tests.conftest import ApiClient
from tests.factories import encode, make_image


def _value(text: str, sample: str) -> float:
    """The value of one sample line (name with its labels) in a Prometheus exposition."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{sample} not in the metrics"
    return float(match[1])


def test_liveness_and_readiness_answer_on_a_current_schema(api: ApiClient) -> None:
    live = api.client.get("/livez")
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"index": "ok", "schema": "ok", "storage": "ok"}
    assert api.client.get("/healthz").status_code == 200


def test_a_data_directory_that_cannot_take_files_is_not_ready(api: ApiClient) -> None:
    spool = api.store.files.spool_dir
    spool.rmdir()
    try:
        ready = api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["storage"] == f"{spool} does not exist"
        assert api.client.get("/livez").status_code == 200
    finally:
        spool.mkdir()
    assert api.client.get("/readyz").status_code == 200


def test_a_schema_behind_the_code_is_not_ready_but_alive(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "_expected_heads", lambda: frozenset({"9999_future"}))
    ready = api.client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert "run teleconsult db upgrade" in body["checks"]["schema"]
    assert "9999_future" in body["checks"]["schema"]
    assert api.client.get("/livez").status_code == 200


def test_an_unreachable_index_is_not_ready(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise ConnectionRefusedError("index host down")

    monkeypatch.setattr(api.store.index.engine, "connect", refuse)
    ready = api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["index"] == "cannot be reached (ConnectionRefusedError)"
    assert api.client.get("/livez").status_code == 200
    healthz = api.client.get("/healthz")
    assert healthz.status_code == 503
    assert healthz.headers["content-type"].startswith("application/problem+json")


def test_metrics_count_events_and_read_live_state(api: ApiClient) -> None:
    before = api.client.get("/metrics").text
    stored_before = (
        _value(before, 'teleconsult_events_total{type="instance.stored"}')
        if 'teleconsult_events_total{type="instance.stored"}' in before
        else 0.0
    )
    api.store.store_instance(
        encode(make_image()), ExplicitVRLittleEndian, calling_ae_title="US", source_organisation="TOWN01"
    )
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _value(text, 'teleconsult_events_total{type="instance.stored"}') == stored_before + 1
    for status in ("pending", "sending", "sent", "failed"):
        assert _value(text, f'teleconsult_forward_queue_rows{{status="{status}"}}') == 0
    assert _value(text, "teleconsult_storage_free_bytes") > 0
    assert _value(text, "teleconsult_websocket_clients") == 0
    assert _value(text, "teleconsult_live_sessions") == 0
    assert _value(text, "teleconsult_live_peer_connections") == 0


def test_metrics_count_websocket_clients(api: ApiClient) -> None:
    token = api.token("specialist")
    with api.client.websocket_connect("/api/events") as socket:
        socket.send_json({"type": "auth", "token": token})
        assert socket.receive_json() == {"type": "ready"}
        text = api.client.get("/metrics").text
        assert _value(text, "teleconsult_websocket_clients") == 1
