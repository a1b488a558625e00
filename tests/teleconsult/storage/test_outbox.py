"""The forwarding queue on SQLite and PostgreSQL: routing, enqueue, claims, retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from teleconsult.config import DicomPeer, ForwardRule, Settings
from teleconsult.storage.outbox import ForwardStatus, Route, backoff_seconds, route
from teleconsult.storage.store import InstanceStore
from tests.factories import SECONDARY_CAPTURE, US_IMAGE, encode, make_image

PEERS = [
    {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
    {"ae_title": "TOWN1PACS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01", "pacs": True},
    {"ae_title": "TOWN2US", "host": "127.0.0.1", "port": 104, "organisation": "TOWN02"},
    {"ae_title": "COUNTY", "host": "127.0.0.1", "port": 104, "organisation": "COUNTY01"},
]
TO_COUNTY = {"name": "county", "from_organisations": ["*"], "destination": "COUNTY"}


def _rules(*rules: dict[str, object]) -> list[ForwardRule]:
    return [ForwardRule.model_validate(rule) for rule in rules]


def _peers() -> list[DicomPeer]:
    return [DicomPeer.model_validate(peer) for peer in PEERS]


# -- routing (pure) ------------------------------------------------------------


def test_rule_matches_source_organisation_and_wildcard() -> None:
    rules = _rules(
        {"name": "town1", "from_organisations": ["TOWN01"], "destination": "COUNTY"},
        {"name": "all", "from_organisations": ["*"], "destination": "TOWN1PACS"},
    )
    town1 = route(rules, _peers(), source_organisation="TOWN01", modality="US", sop_class_uid=US_IMAGE)
    town2 = route(rules, _peers(), source_organisation="TOWN02", modality="US", sop_class_uid=US_IMAGE)
    assert town1 == [Route("COUNTY", "town1"), Route("TOWN1PACS", "all")]
    assert town2 == [Route("TOWN1PACS", "all")]


def test_rule_matches_modality_and_sop_class() -> None:
    rules = _rules(
        {
            "name": "reports",
            "from_organisations": ["*"],
            "modalities": ["sr", "DOC", "OT"],
            "destination": "COUNTY",
        },
        {
            "name": "us-only",
            "from_organisations": ["*"],
            "sop_classes": [US_IMAGE],
            "destination": "TOWN1PACS",
        },
    )

    def destinations(modality: str, sop_class_uid: str) -> list[str]:
        return [
            r.destination_ae_title
            for r in route(
                rules, _peers(), source_organisation="TOWN02", modality=modality, sop_class_uid=sop_class_uid
            )
        ]

    assert destinations("SR", "1.2.840.10008.5.1.4.1.1.88.11") == ["COUNTY"]
    assert destinations("OT", SECONDARY_CAPTURE) == ["COUNTY"]
    assert destinations("US", US_IMAGE) == ["TOWN1PACS"]
    assert destinations("DX", "1.2.840.10008.5.1.4.1.1.1.1") == []


def test_source_pacs_is_the_pacs_of_the_instance_organisation() -> None:
    rules = _rules({"name": "home", "from_organisations": ["*"], "destination": "source-pacs"})
    town1 = route(rules, _peers(), source_organisation="TOWN01", modality="SR", sop_class_uid="1.2.3")
    town2 = route(rules, _peers(), source_organisation="TOWN02", modality="SR", sop_class_uid="1.2.3")
    assert town1 == [Route("TOWN1PACS", "home")]
    assert town2 == [], "an organisation without a PACS peer gets nothing"


def test_never_sent_back_to_its_sender_and_each_destination_once() -> None:
    rules = _rules(
        {"name": "home", "from_organisations": ["TOWN01"], "destination": "source-pacs"},
        {"name": "again", "from_organisations": ["*"], "destination": "TOWN1PACS"},
        {"name": "county", "from_organisations": ["*"], "destination": "COUNTY"},
    )
    kwargs = {"source_organisation": "TOWN01", "modality": "CT", "sop_class_uid": "1.2.3"}
    from_device = route(rules, _peers(), calling_ae_title="TOWNUS", **kwargs)
    from_pacs = route(rules, _peers(), calling_ae_title="TOWN1PACS ", **kwargs)
    assert from_device == [Route("TOWN1PACS", "home"), Route("COUNTY", "county")]
    assert from_pacs == [Route("COUNTY", "county")]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, 10, 3600) for n in range(4)] == [10, 20, 40, 80]
    assert backoff_seconds(20, 10, 3600) == 3600
    assert backoff_seconds(10_000, 10, 3600) == 3600, "no overflow after many attempts"


# -- settings validation ---------------------------------------------------------


def test_unknown_destination_is_refused_at_start_up(make_settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as refused:
        make_settings(
            dicom_peers=PEERS,
            dicom_forward_rules=[
                {"name": "county-pacs", "from_organisations": ["*"], "destination": "NOBODY"}
            ],
        )
    message = str(refused.value)
    assert "TELECONSULT_DICOM_FORWARD_RULES" in message
    assert "'county-pacs'" in message
    assert "'NOBODY' is not a configured peer" in message


@pytest.mark.parametrize(
    ("peers", "rules", "expected"),
    [
        (PEERS[:1], [{"name": "home", "from_organisations": ["*"], "destination": "source-pacs"}], "pacs"),
        (PEERS, [TO_COUNTY, TO_COUNTY], "two rules 'county'"),
        (PEERS, [{"name": "x", "from_organisations": [], "destination": "COUNTY"}], "from_organisations"),
        (PEERS, [{"name": "x", "destination": "COUNTY"}], "from_organisations"),
        (PEERS, [{"name": "x", "from_organisations": ["*"], "destination": "BAD\\AE"}], "destination"),
        (
            [*PEERS, {**PEERS[0], "ae_title": "PACS2", "pacs": True}],
            [],
            "as the PACS of organisation 'TOWN01'",
        ),
    ],
)
def test_inconsistent_forwarding_settings_are_refused(
    make_settings,  # type: ignore[no-untyped-def]
    peers: list[dict[str, object]],
    rules: list[dict[str, object]],
    expected: str,
) -> None:
    with pytest.raises(ValidationError, match="(?s)" + expected.replace("\\", "\\\\")):
        make_settings(dicom_peers=peers, dicom_forward_rules=rules)


def test_forward_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TELECONSULT_DICOM_PEERS", json.dumps(PEERS))
    monkeypatch.setenv(
        "TELECONSULT_DICOM_FORWARD_RULES",
        json.dumps(
            [
                {
                    "name": "reports",
                    "from_organisations": ["TOWN01"],
                    "modalities": ["SR"],
                    "destination": "COUNTY",
                }
            ]
        ),
    )
    monkeypatch.setenv("TELECONSULT_DICOM_FORWARD_MAX_ATTEMPTS", "5")
    settings = Settings()
    assert settings.dicom_forward_rules[0].modalities == ["SR"]
    assert settings.dicom_forward_max_attempts == 5
    assert settings.dicom_forward_stable_seconds == 10
    assert settings.dicom_forward_workers == 1
    assert [p.ae_title for p in settings.dicom_peers if p.pacs] == ["TOWN1PACS"]


# -- the queue on both backends ----------------------------------------------------


@pytest.fixture
def open_store(make_settings) -> Iterator[Callable[..., InstanceStore]]:  # type: ignore[no-untyped-def]
    """Stores on the same data directory and index, each with its own engine (a separate process)."""
    opened: list[InstanceStore] = []

    def _open(**overrides: object) -> InstanceStore:
        values: dict[str, object] = {
            "dicom_peers": PEERS,
            "dicom_forward_rules": [TO_COUNTY],
            "dicom_forward_stable_seconds": 0,
            "dicom_forward_retry_base_seconds": 10,
            "dicom_forward_max_retry_seconds": 60,
        }
        values.update(overrides)
        store = InstanceStore(make_settings(**values))
        store.open()
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def _put(store: InstanceStore, data: bytes, organisation: str = "TOWN01", calling: str = "TOWNUS"):  # type: ignore[no-untyped-def]
    return store.store_instance(
        data, ExplicitVRLittleEndian, calling_ae_title=calling, source_organisation=organisation
    )


def _study(store: InstanceStore, count: int, **kwargs: object) -> str:
    study = generate_uid()
    for seed in range(count):
        _put(store, encode(make_image(study_instance_uid=study, seed=seed)), **kwargs)  # type: ignore[arg-type]
    return study


def test_enqueue_with_the_index_row_and_never_for_a_duplicate(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store(
        dicom_forward_rules=[
            TO_COUNTY,
            {"name": "home", "from_organisations": ["*"], "destination": "source-pacs"},
        ]
    )
    ds = make_image()
    data = encode(ds)
    _put(store, data)
    entries = store.outbox.list_entries()
    assert sorted((e.destination_ae_title, e.rule) for e in entries) == [
        ("COUNTY", "county"),
        ("TOWN1PACS", "home"),
    ]
    entry = entries[0]
    record = store.index.instance(ds.SOPInstanceUID)
    assert record is not None
    assert (entry.sop_instance_uid, entry.study_instance_uid, entry.sop_class_uid) == (
        ds.SOPInstanceUID,
        ds.StudyInstanceUID,
        ds.SOPClassUID,
    )
    assert (entry.file_key, entry.transfer_syntax_uid) == (record.file_key, ExplicitVRLittleEndian)
    assert (entry.status, entry.attempts, entry.source_organisation) == (ForwardStatus.PENDING, 0, "TOWN01")

    _put(store, data)
    assert len(store.outbox.list_entries()) == 2, "a duplicate queues nothing"

    ds.PatientName = "Wang^XiaoMing=王^晓明"
    _put(store, encode(ds))
    assert len(store.outbox.list_entries()) == 4, "new content is a new version to forward"
    newest = store.outbox.list_entries(destination_ae_title="COUNTY")[0]
    assert newest.file_key == store.index.instance(ds.SOPInstanceUID).file_key  # type: ignore[union-attr]
    assert newest.file_key != entry.file_key or entry.destination_ae_title != "COUNTY"


def test_instance_is_not_indexed_when_its_queue_rows_cannot_be_written(
    open_store, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    store = open_store()

    def broken(*_args: object) -> None:
        raise RuntimeError("queue write failed")

    monkeypatch.setattr(store.outbox, "enqueue", broken)
    ds = make_image()
    with pytest.raises(RuntimeError):
        _put(store, encode(ds))
    assert store.index.instance(ds.SOPInstanceUID) is None, "index row rolled back with the queue rows"
    assert store.outbox.list_entries() == []


def test_rules_decide_what_is_queued(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store(
        dicom_forward_rules=[
            {"name": "town1", "from_organisations": ["TOWN01"], "modalities": ["OT"], "destination": "COUNTY"}
        ]
    )
    _put(store, encode(make_image(SECONDARY_CAPTURE, modality="OT")))
    _put(store, encode(make_image(modality="US")))
    _put(
        store, encode(make_image(SECONDARY_CAPTURE, modality="OT")), organisation="TOWN02", calling="TOWN2US"
    )
    assert [e.sop_class_uid for e in store.outbox.list_entries()] == [SECONDARY_CAPTURE]


def test_claim_takes_one_study_for_one_destination_and_is_exclusive(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    first = _study(store, 3)
    second = _study(store, 2)
    claimed = store.outbox.claim("w1")
    assert [e.study_instance_uid for e in claimed] == [first] * 3, "oldest study first, whole group"
    assert all(e.status is ForwardStatus.SENDING and e.claimed_by == "w1" for e in claimed)
    assert [e.pk for e in claimed] == sorted(e.pk for e in claimed)
    again = store.outbox.claim("w2")
    assert {e.study_instance_uid for e in again} == {second}
    assert store.outbox.claim("w3") == []
    assert store.outbox.counts() == {"pending": 0, "sending": 5, "sent": 0, "failed": 0}


def test_two_forwarders_racing_never_claim_the_same_row(open_store) -> None:  # type: ignore[no-untyped-def]
    writer = open_store()
    studies = [_study(writer, 4) for _ in range(12)]
    # Each forwarder has its own engine, as two processes would.
    forwarders = [open_store(), open_store()]
    claims: dict[str, list[int]] = {"a": [], "b": [], "c": [], "d": []}
    barrier = threading.Barrier(len(claims))
    errors: list[BaseException] = []

    def work(name: str, store: InstanceStore) -> None:
        try:
            barrier.wait()
            while entries := store.outbox.claim(name, limit=3):
                claims[name].extend(e.pk for e in entries)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name, forwarders[n % 2])) for n, name in enumerate(claims)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    every = [pk for pks in claims.values() for pk in pks]
    assert len(every) == len(set(every)) == 4 * len(studies), "each row claimed exactly once"
    assert all(e.claimed_by in claims for e in writer.outbox.list_entries(limit=None))


def test_a_study_waits_until_stable(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store(dicom_forward_stable_seconds=10)
    _study(store, 2)
    now = datetime.now(UTC)
    assert store.outbox.claim("w", now=now) == [], "instances arrived less than 10 s ago"
    assert len(store.outbox.claim("w", now=now + timedelta(seconds=11))) == 2


def test_failures_back_off_exponentially_then_succeed(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store(dicom_forward_retry_base_seconds=10, dicom_forward_max_retry_seconds=25)
    _study(store, 1)
    outbox = store.outbox
    now = datetime.now(UTC)
    delays = []
    for _ in range(3):
        (entry,) = outbox.claim("w", now=now)
        assert outbox.retry_later("w", [(entry.pk, "cannot connect to COUNTY")], now=now) == (1, 0)
        (pending,) = outbox.list_entries()
        delays.append((pending.next_attempt_at - now).total_seconds())
        assert outbox.claim("w", now=pending.next_attempt_at - timedelta(seconds=1)) == []
        now = pending.next_attempt_at
    assert delays == [10, 20, 25], "base, doubled, then capped"
    assert (pending.status, pending.attempts, pending.last_error) == (
        ForwardStatus.PENDING,
        3,
        "cannot connect to COUNTY",
    )
    (entry,) = outbox.claim("w", now=now)
    assert outbox.acknowledge("w", [entry.pk], now=now) == 1
    (sent,) = outbox.list_entries(status="sent")
    assert (sent.attempts, sent.sent_at, sent.last_error) == (4, now, None)


def test_max_attempts_marks_failed_and_retry_brings_it_back(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store(dicom_forward_max_attempts=2, dicom_forward_retry_base_seconds=1)
    _study(store, 2)
    outbox = store.outbox
    now = datetime.now(UTC)
    for attempt in range(2):
        entries = outbox.claim("w", now=now)
        assert len(entries) == 2
        failures = [(e.pk, "C-STORE status 0xA700 (Failure) from COUNTY") for e in entries]
        assert outbox.retry_later("w", failures, now=now) == ((2, 0) if attempt == 0 else (0, 2))
        now += timedelta(seconds=5)
    failed = outbox.list_entries(status="failed")
    assert len(failed) == 2
    assert all(e.attempts == 2 and "0xA700" in (e.last_error or "") for e in failed)
    assert outbox.claim("w", now=now + timedelta(days=1)) == [], "failed rows are not retried by themselves"

    assert outbox.retry([failed[0].pk], now=now) == [failed[0].pk]
    assert outbox.counts()["failed"] == 1
    assert outbox.retry(now=now) == [failed[1].pk], "--all-failed"
    assert all(e.attempts == 0 and e.next_attempt_at == now for e in outbox.list_entries(status="pending"))
    assert outbox.retry([999_999], now=now) == []


def test_stale_claims_are_reclaimed_and_their_late_acknowledgement_ignored(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    _study(store, 2)
    outbox = store.outbox
    claimed_at = datetime.now(UTC)
    entries = outbox.claim("crashed", now=claimed_at)
    assert outbox.reclaim_stale(300, now=claimed_at + timedelta(seconds=100)) == 0, "not stale yet"
    later = claimed_at + timedelta(seconds=301)
    assert outbox.reclaim_stale(300, now=later) == 2
    reclaimed = outbox.list_entries(status="pending")
    assert len(reclaimed) == 2
    assert all("reclaimed" in (e.last_error or "") for e in reclaimed)
    again = outbox.claim("alive", now=later)
    assert [e.pk for e in again] == [e.pk for e in entries]
    assert outbox.acknowledge("crashed", [e.pk for e in entries]) == 0, "the dead claim no longer counts"
    assert outbox.counts()["sending"] == 2


def test_touch_keeps_a_long_claim_alive_and_release_counts_no_attempt(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    _study(store, 2)
    outbox = store.outbox
    start = datetime.now(UTC)
    entries = outbox.claim("w", now=start)
    outbox.touch("w", now=start + timedelta(seconds=250))
    assert outbox.reclaim_stale(300, now=start + timedelta(seconds=400)) == 0
    assert outbox.release("w", [e.pk for e in entries]) == 2
    assert all(e.status is ForwardStatus.PENDING and e.attempts == 0 for e in outbox.list_entries())


def test_listing_filters_and_json(open_store) -> None:  # type: ignore[no-untyped-def]
    store = open_store()
    study = _study(store, 2)
    _study(store, 1, organisation="TOWN02", calling="TOWN2US")
    outbox = store.outbox
    assert len(outbox.list_entries(study_instance_uid=study)) == 2
    assert len(outbox.list_entries(organisations=["TOWN02"])) == 1
    assert outbox.counts(organisations=["TOWN01"])["pending"] == 2
    assert outbox.list_entries(status="sent") == []
    document = outbox.list_entries(limit=1)[0].as_json()
    assert json.loads(json.dumps(document))["status"] == "pending"
    assert set(document) >= {
        "id",
        "destination_ae_title",
        "attempts",
        "last_error",
        "next_attempt_at",
        "sent_at",
    }
    with pytest.raises(ValueError, match="bogus"):
        outbox.list_entries(status="bogus")


def test_cli_lists_the_queue_and_retries_failed_rows(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,  # type: ignore[no-untyped-def]
    database_url: str,
) -> None:
    from teleconsult.cli import main

    monkeypatch.setenv("TELECONSULT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TELECONSULT_DATABASE_URL", database_url)
    monkeypatch.setenv("TELECONSULT_DICOM_PEERS", json.dumps(PEERS))
    monkeypatch.setenv("TELECONSULT_DICOM_FORWARD_RULES", json.dumps([TO_COUNTY]))
    monkeypatch.setenv("TELECONSULT_DICOM_FORWARD_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("TELECONSULT_DICOM_FORWARD_STABLE_SECONDS", "0")
    store = InstanceStore(Settings())
    store.open()
    try:
        study = _study(store, 2)
        entries = store.outbox.claim("w")
        store.outbox.retry_later("w", [(entries[0].pk, "cannot connect to COUNTY at 127.0.0.1:104")])
        store.outbox.acknowledge("w", [entries[1].pk])
    finally:
        store.close()
    capsys.readouterr()

    assert main(["forward", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["status"], row["study_instance_uid"]) for row in listed] == [
        ("sent", study),
        ("failed", study),
    ]
    assert listed[1]["last_error"] == "cannot connect to COUNTY at 127.0.0.1:104"

    assert main(["forward", "list", "--status", "failed"]) == 0
    out, err = capsys.readouterr()
    assert "failed" in out
    assert "cannot connect to COUNTY" in out
    assert "1 sent" in err
    assert "1 failed" in err

    assert main(["forward", "retry"]) == 2, "ids or --all-failed"
    assert main(["forward", "retry", "--all-failed"]) == 0
    assert f"1 rows will be sent again: {entries[0].pk}" in capsys.readouterr().out
    assert main(["forward", "retry", str(entries[1].pk)]) == 0
    assert "not changed" in capsys.readouterr().err, "a sent row is not sent again"
    assert main(["forward", "list", "--status", "pending", "--json"]) == 0
    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [entries[0].pk]
