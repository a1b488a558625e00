"""Who hears what: each event reaches exactly the users allowed to see its study or consult.

"Not received" is shown without waiting on a timeout: events reach a socket
in the order they happen, so after an event a user must not see, one they
must see is sent; the next message has to be that one.
"""

from __future__ import annotations

from pydicom.uid import generate_uid

from teleconsult.events import Event
from teleconsult.storage.identity import IdentityStore
from tests.conftest import PASSWORD
from tests.factories import encode, make_image
from tests.teleconsult.consults.conftest import DRAFT, accepted
from tests.teleconsult.notifications.conftest import Events


def _study(message: dict[str, object]) -> object:
    assert message["type"] == "study.stored", message
    return message["data"]["study_instance_uid"]  # type: ignore[index]


def test_a_township_hears_its_own_studies_and_the_county_hears_all(events: Events) -> None:
    with (
        events.connect("sono1") as town1,
        events.connect("sono2") as town2,
        events.connect("specialist") as county,
    ):
        other = events.consulting.store_study("TOWN02")
        own = events.consulting.store_study("TOWN01")
        village = events.consulting.store_study("VILLAGE21")

        first = town1.next()
        assert _study(first) == own.StudyInstanceUID  # TOWN02's study, sent before, never came
        assert first["data"]["source_organisation"] == "TOWN01"
        assert first["data"]["instances"] == 1
        assert first["data"]["series_instance_uids"] == [own.SeriesInstanceUID]
        assert set(first) == {"type", "id", "time", "data"}

        # TOWN02 sees its own study and its village's, not TOWN01's.
        assert [_study(town2.next()), _study(town2.next())] == [
            other.StudyInstanceUID,
            village.StudyInstanceUID,
        ]
        # The county hospital is above every township and village.
        assert [_study(county.next()) for _ in range(3)] == [
            other.StudyInstanceUID,
            own.StudyInstanceUID,
            village.StudyInstanceUID,
        ]
        # And TOWN01 still has heard nothing of TOWN02's or the village's study.
        marker = events.consulting.store_study("TOWN01")
        assert _study(town1.next()) == marker.StudyInstanceUID


def test_instances_of_a_study_are_announced_once_then_together(events: Events) -> None:
    consulting = events.consulting
    with events.connect("specialist") as county:
        first = consulting.store_study("TOWN01")
        second_series = generate_uid()
        for seed in range(1, 5):
            consulting.store_study(
                "TOWN01",
                study_instance_uid=first.StudyInstanceUID,
                series_instance_uid=second_series if seed % 2 else first.SeriesInstanceUID,
                seed=seed,
            )
        leading, trailing = county.next(), county.next()
        assert _study(leading) == _study(trailing) == first.StudyInstanceUID
        assert leading["data"]["instances"] == 1
        assert trailing["data"]["instances"] == 4  # after the 0.3 s window of OPTIONS
        assert trailing["data"]["series_instance_uids"] == sorted({first.SeriesInstanceUID, second_series})
        assert leading["id"] != trailing["id"]


def test_a_study_shared_by_a_consult_reaches_the_consulted_specialist(events: Events) -> None:
    consulting = events.consulting
    with events.connect("cityspec") as city:
        study = consulting.store_study("TOWN01")
        consult = consulting.request(study=study, target_specialist="cityspec")

        requested = city.next()  # the city hospital is outside the county's tree: only the consult
        assert requested["type"] == "consult.requested"
        assert requested["data"]["consult_id"] == consult["id"]
        assert requested["data"]["study_instance_uid"] == study.StudyInstanceUID

        unrelated = consulting.store_study("TOWN01")
        more = make_image(study_instance_uid=study.StudyInstanceUID, seed=7)
        consulting.api.store.store_instance(
            encode(more),
            more.file_meta.TransferSyntaxUID,
            calling_ae_title="TOWNUS",
            source_organisation="TOWN01",
        )
        shared = city.next()
        assert _study(shared) == study.StudyInstanceUID
        assert shared["data"]["study_instance_uid"] != unrelated.StudyInstanceUID

        # Declined, the consult shares nothing any more.
        response = consulting.post(
            "cityspec", f"/api/consults/{consult['id']}/decline", {"reason": "not mine"}
        )
        assert response.status_code == 200, response.text
        assert city.next()["type"] == "consult.declined"
        again = make_image(study_instance_uid=study.StudyInstanceUID, seed=8)
        consulting.api.store.store_instance(
            encode(again),
            again.file_meta.TransferSyntaxUID,
            calling_ae_title="TOWNUS",
            source_organisation="TOWN01",
        )
        consult2 = consulting.request(study=consulting.store_study("TOWN01"), target_specialist="cityspec")
        assert city.next()["data"]["consult_id"] == consult2["id"]


def test_consult_events_reach_its_sides_and_no_one_else(events: Events) -> None:
    consulting = events.consulting
    with (
        events.connect("sono1") as requester,
        events.connect("sono2") as other_township,
        events.connect("specialist") as specialist,
    ):
        consult = accepted(consulting)

        assert _study(requester.next()) == consult["study_instance_uid"]
        requested = requester.next()
        assert (requested["type"], requested["data"]["consult_id"]) == ("consult.requested", consult["id"])
        assert requested["data"]["actor"] == "sono1"
        taken = requester.next()
        assert (taken["type"], taken["data"]["assignee"]) == ("consult.accepted", "specialist")

        assert _study(specialist.next()) == consult["study_instance_uid"]
        assert [specialist.next()["type"], specialist.next()["type"]] == [
            "consult.requested",
            "consult.accepted",
        ]

        # TOWN02 heard neither the study nor the consult.
        marker = consulting.store_study("TOWN02")
        assert _study(other_township.next()) == marker.StudyInstanceUID

        path = f"/api/consults/{consult['id']}/report"
        assert consulting.put("doctor1", path, DRAFT).status_code == 200
        assert consulting.post("doctor1", f"{path}/sign").status_code == 200
        assert consulting.post("specialist", f"{path}/sign").status_code == 200
        performing = requester.next_of("report.performing_signed")
        signed = requester.next()
        assert (signed["type"], signed["data"]["consult_id"]) == ("report.signed", consult["id"])
        assert signed["data"]["final"] is True
        assert performing["data"]["role"] == "performing"
        assert specialist.next_of("report.signed")["data"]["consult_id"] == consult["id"]


def test_a_pool_hears_a_consult_while_it_waits_then_only_the_one_who_took_it(events: Events) -> None:
    consulting = events.consulting
    IdentityStore(consulting.api.store.index.engine).add_user("cityspec2", PASSWORD, "specialist", "CITY")
    with events.connect("cityspec") as taker, events.connect("cityspec2") as colleague:
        consult = consulting.request(target_organisation="CITY")  # the CITY pool, outside the county
        for socket in (taker, colleague):
            requested = socket.next()
            assert requested["type"] == "consult.requested"
            assert requested["data"]["consult_id"] == consult["id"]
            assert requested["data"]["target"] == {
                "kind": "pool",
                "organisation": "CITY",
                "department": None,
                "specialist": None,
            }
        assert consulting.post("cityspec", f"/api/consults/{consult['id']}/accept").status_code == 200
        assert taker.next()["type"] == "consult.accepted"
        # Once taken, the consult is no longer the colleague's: the next thing they hear is a new one.
        second = consulting.request(target_organisation="CITY")
        message = colleague.next()
        while message["type"] == "study.stored":
            # The second consult's study (shared with the pool by it) may be announced first.
            message = colleague.next()
        assert (message["type"], message["data"]["consult_id"]) == ("consult.requested", second["id"])


def test_overdue_goes_to_its_recipients_only(events: Events) -> None:
    consulting = events.consulting
    with events.connect("admin") as admin, events.connect("sono1") as requester:
        consult = consulting.request()  # to the COUNTY pool: escalated to COUNTY's admin
        assert requester.next_of("consult.requested")["data"]["consult_id"] == consult["id"]

        consulting.clock.advance(hours=5)  # urgent: 4 hours
        assert [c.consult_id for c in consulting.consults.check_overdue()] == [consult["id"]]

        overdue = admin.next_of("consult.overdue")
        assert overdue["data"]["consult_id"] == consult["id"]
        assert overdue["data"]["recipients"] == ["admin"]
        assert overdue["data"]["escalation"] == "organisation_admin"
        # The requesting side is not among the recipients.
        marker = consulting.store_study("TOWN01")
        assert _study(requester.next()) == marker.StudyInstanceUID


def test_critical_alerts_follow_the_study(events: Events) -> None:
    consulting = events.consulting
    with events.connect("sono1") as town1, events.connect("sono2") as town2:
        study = consulting.store_study("TOWN02")
        assert _study(town2.next()) == study.StudyInstanceUID
        # Published without the organisation: the hub finds it in the index.
        consulting.api.store.bus.publish(
            Event(
                type="alert.critical",
                data={
                    "study_instance_uid": study.StudyInstanceUID,
                    "reason": "STEMI screen positive",
                    "measurements": {"st_elevation_mv": {"V2": 0.35}},
                },
            )
        )
        alert = town2.next()
        assert alert["type"] == "alert.critical"
        assert alert["data"]["reason"] == "STEMI screen positive"
        assert alert["data"]["measurements"] == {"st_elevation_mv": {"V2": 0.35}}
        marker = consulting.store_study("TOWN01")
        assert _study(town1.next()) == marker.StudyInstanceUID


def test_internal_only_events_are_not_sent(events: Events) -> None:
    with events.connect("specialist") as county:
        bus = events.consulting.api.store.bus
        bus.publish(Event(type="forward.sent", data={"study_instance_uid": "1.2.3"}))
        bus.publish(Event(type="instance.stored", data={"source_organisation": "TOWN01"}))  # no study
        marker = events.consulting.store_study("TOWN01")
        assert _study(county.next()) == marker.StudyInstanceUID


def test_referral_events_reach_the_consults_sides_and_the_target(events: Events) -> None:
    consulting = events.consulting
    with (
        events.connect("sono1") as requester,
        events.connect("sono2") as other_township,
        events.connect("specialist") as specialist,
    ):
        consult = accepted(consulting, urgency="critical")
        response = consulting.post(
            "specialist",
            f"/api/consults/{consult['id']}/referrals",
            {"direction": "up", "reason": "疑似急性心肌梗死，转县医院胸痛中心。"},
        )
        assert response.status_code == 201, response.text
        referral = response.json()

        issued = requester.next_of("referral.issued")
        assert issued["data"]["referral_id"] == referral["id"]
        assert issued["data"]["consult_id"] == consult["id"]
        assert issued["data"]["target_organisation"] == "COUNTY"
        assert issued["data"]["green_channel"] is True  # a critical consult goes up by the green channel
        assert specialist.next_of("referral.issued")["data"]["referral_id"] == referral["id"]

        accept = consulting.post("specialist", f"/api/referrals/{referral['id']}/accept", {})
        assert accept.status_code == 200, accept.text
        assert requester.next_of("referral.accepted")["data"]["referral_id"] == referral["id"]

        # TOWN02 heard none of it.
        marker = consulting.store_study("TOWN02")
        assert _study(other_township.next()) == marker.StudyInstanceUID
