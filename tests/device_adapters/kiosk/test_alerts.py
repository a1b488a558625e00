"""A value past an alert threshold reaches the clinic's scope on /api/events, once, and no one else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import ApiClient
from tests.device_adapters.kiosk.conftest import ID_DIGIT, message, post

pytestmark = pytest.mark.timeout(60)


@contextmanager
def _events(api: ApiClient, user: str) -> Iterator[Any]:
    token = api.token(user)  # before the socket opens: signing in must not eat the auth deadline
    with api.client.websocket_connect("/api/events") as ws:  # type: ignore[attr-defined]
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json() == {"type": "ready"}
        yield ws


def test_out_of_range_value_reaches_the_clinic_scope_only(
    api: ApiClient, kiosk_headers: dict[str, str]
) -> None:
    high = message(
        measurements=[
            {"type": "blood_pressure", "systolic": 186, "diastolic": 100},
            {"type": "spo2", "value": 88},
            {"type": "weight", "value": 60, "unit": "kg"},
        ]
    )
    with (
        _events(api, "village") as village,
        _events(api, "sono2") as township,
        _events(api, "sono1") as other,
    ):
        answer = post(api, high, kiosk_headers)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        for ws in (village, township):  # the clinic and its township
            event = ws.receive_json()
            assert event["type"] == "alert.critical"
            assert event["id"] == body["alert_event_id"]
            data = event["data"]
            assert data["study_instance_uid"] is None
            assert data["source"] == "kiosk"
            assert data["source_organisation"] == "VILLAGE21"
            assert data["kiosk_patient"] == body["patient"]["patient_key"]
            assert data["reason"] == "systolic blood pressure 186 mmHg ≥ 180 mmHg; SpO2 88 % < 90 %"
            assert [
                (m["type"], m["component"], m["value"], m["threshold"]) for m in data["measurements"]
            ] == [
                ("blood_pressure", "systolic", 186, ">= 180"),
                ("spo2", "value", 88, "< 90"),
            ]
            assert set(data["observation_ids"]) == {o["id"] for o in body["observations"] if o["alerts"]}
            assert ID_DIGIT not in str(event)
            assert "王小明" not in str(event)
        # TOWN01 is not above the village: it was offered nothing (the pong comes first)
        other.send_json({"type": "ping"})
        assert other.receive_json() == {"type": "pong"}

        # the same message again is a duplicate: no second alert
        again = post(api, high, kiosk_headers)
        assert again.json()["alert_event_id"] is None
        later = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        normal = post(
            api, message(measured_at=later, measurements=[{"type": "spo2", "value": 97}]), kiosk_headers
        )
        assert normal.json()["alert_event_id"] is None
        village.send_json({"type": "ping"})
        assert village.receive_json() == {"type": "pong"}
