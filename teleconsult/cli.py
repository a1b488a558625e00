"""The ``teleconsult`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from teleconsult import __version__, metrics, runtime_dirs
from teleconsult.config import Settings, settings_help
from teleconsult.domain.identity import Role
from teleconsult.domain.studies import StudyQuery
from teleconsult.errors import TeleconsultError
from teleconsult.log import configure_logging
from teleconsult.serve_lock import lock_data_directory
from teleconsult.storage.outbox import ForwardStatus
from teleconsult.storage.store import InstanceStore

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teleconsult",
        description="Remote diagnosis and teleconsultation for county medical communities.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (environment variables, or the same names in lower case without the\n"
        "prefix in a TOML file given by --config or TELECONSULT_CONFIG_FILE):\n" + settings_help(),
    )
    parser.add_argument("--version", action="version", version=f"teleconsult {__version__}")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API and the DICOM gateway in one process")
    serve.add_argument("--no-dicom", action="store_true", help="do not start the DICOM gateway")
    serve.add_argument("--no-http", action="store_true", help="do not start the HTTP API")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser("upgrade", help="apply every migration to the index")

    study = commands.add_parser("study", help="studies in the index")
    study_commands = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    find = study_commands.add_parser(
        "find", help="find studies (DICOM matching: * and ? wildcards, date ranges A-B)"
    )
    find.add_argument("--patient-name", default="", help="e.g. '王*' or 'WANG^XIAOMING'")
    find.add_argument("--patient-id", default="")
    find.add_argument("--date", default="", help="YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-")
    find.add_argument("--modality", default="")
    find.add_argument("--accession-number", default="")
    find.add_argument("--limit", type=int, default=100)
    find.add_argument("--json", action="store_true", help="print JSON instead of a table")

    instance = commands.add_parser("instance", help="stored instances")
    instance_commands = instance.add_subparsers(dest="instance_command", metavar="ACTION", required=True)
    versions = instance_commands.add_parser("versions", help="every stored version of a SOP instance")
    versions.add_argument("sop_instance_uid")
    export = instance_commands.add_parser("export", help="write a stored version to a file")
    export.add_argument("sop_instance_uid")
    export.add_argument("output", type=Path)
    export.add_argument("--version", type=int, dest="version_number", help="default: the current one")

    org = commands.add_parser("org", help="organisations of the medical community")
    org_commands = org.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    org_add = org_commands.add_parser("add", help="add an organisation")
    org_add.add_argument("code", help="e.g. COUNTY, TOWN01")
    org_add.add_argument("--name", required=True)
    org_add.add_argument("--parent", help="code of the organisation above it")
    org_commands.add_parser("list", help="list organisations")

    user = commands.add_parser("user", help="user accounts")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    user_add = user_commands.add_parser("add", help="add a user")
    user_add.add_argument("username")
    user_add.add_argument("--password", required=True, help="at least 8 characters")
    user_add.add_argument("--role", required=True, choices=[r.value for r in Role])
    user_add.add_argument("--org", required=True, help="organisation code")
    user_add.add_argument("--display-name", default="")
    user_commands.add_parser("list", help="list users")
    for action in ("disable", "enable"):
        toggle = user_commands.add_parser(action, help=f"{action} a user (disabling revokes their tokens)")
        toggle.add_argument("username")

    store = commands.add_parser("store", help="the file store")
    store_commands = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    store_commands.add_parser("check", help="verify every indexed file against its SHA-256")

    backup = commands.add_parser(
        "backup", help="copy the index and the files it names into a directory (while serve runs)"
    )
    backup.add_argument(
        "destination", type=Path, help="backup directory; a second backup into it copies only new files"
    )
    restore = commands.add_parser("restore", help="put a backup into an empty data directory and database")
    restore.add_argument("source", type=Path, help="a directory written by teleconsult backup")

    forward = commands.add_parser("forward", help="the forwarding queue (C-STORE to PACS)")
    forward_commands = forward.add_subparsers(dest="forward_command", metavar="ACTION", required=True)
    forward_list = forward_commands.add_parser("list", help="queue rows and their state, newest first")
    forward_list.add_argument("--status", choices=[status.value for status in ForwardStatus])
    forward_list.add_argument("--limit", type=int, default=100, help="0 = every row")
    forward_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    forward_retry = forward_commands.add_parser(
        "retry", help="send failed rows again, or make the given rows due now"
    )
    forward_retry.add_argument("--all-failed", action="store_true", help="every failed row")
    forward_retry.add_argument("ids", nargs="*", type=int, metavar="ID", help="row ids from `forward list`")
    worklist = commands.add_parser("worklist", help="the modality worklist devices fetch patients from")
    worklist_commands = worklist.add_subparsers(dest="worklist_command", metavar="ACTION", required=True)
    worklist_add = worklist_commands.add_parser("add", help="schedule a procedure step for a device")
    worklist_add.add_argument("--patient-id", required=True)
    worklist_add.add_argument(
        "--patient-name", required=True, help="e.g. '王^小明' or 'Wang^XiaoMing=王^小明'"
    )
    worklist_add.add_argument("--birth-date", default="", help="YYYYMMDD")
    worklist_add.add_argument("--sex", default="", help="M, F or O")
    worklist_add.add_argument("--accession-number", required=True)
    worklist_add.add_argument("--modality", required=True, help="e.g. US, DX, ECG")
    worklist_add.add_argument("--station-ae-title", required=True, help="AE title of the device")
    worklist_add.add_argument(
        "--scheduled-start", default=None, help="YYYYMMDDHHMMSS in local time (default: now)"
    )
    worklist_add.add_argument("--procedure-description", default="")
    worklist_add.add_argument("--requested-procedure-id", default=None, help="default: the accession number")
    worklist_add.add_argument(
        "--organisation",
        default="",
        help="organisation of the patient ID (default: the station's, from peers)",
    )
    worklist_add.add_argument("--study-instance-uid", default=None, help="default: a new UID")
    worklist_list = worklist_commands.add_parser("list", help="scheduled items, earliest first")
    worklist_list.add_argument("--all", action="store_true", help="include cancelled items")
    worklist_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    worklist_cancel = worklist_commands.add_parser("cancel", help="stop offering an item to devices")
    worklist_cancel.add_argument("item_id", type=int, metavar="ID", help="item id from `worklist list`")
    audit = commands.add_parser("audit", help="the audit trail (who accessed which patient's data)")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    audit_commands.add_parser(
        "verify", help="walk the hash chain; exit 1 and name the first event that does not follow"
    )
    audit_export = audit_commands.add_parser(
        "export", help="write DICOM PS3.15 / IHE ATNA audit messages (XML) to stdout, oldest first"
    )
    for bound in ("since", "until"):
        audit_export.add_argument(
            f"--{bound}", help="ISO 8601, e.g. 2026-11-01 or 2026-11-01T08:00+08:00 (UTC without an offset)"
        )
    kiosk = commands.add_parser("kiosk", help="health kiosks registered in TELECONSULT_KIOSK_DEVICES")
    kiosk_commands = kiosk.add_subparsers(dest="kiosk_command", metavar="ACTION", required=True)
    kiosk_commands.add_parser("list", help="registered kiosks and their organisations")
    kiosk_token = kiosk_commands.add_parser(
        "token", help="print a kiosk's token (Authorization: Bearer ...) for POST /api/kiosk/measurements"
    )
    kiosk_token.add_argument("device_id", help="a device id of TELECONSULT_KIOSK_DEVICES")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides["config_file"] = args.config
    return Settings(**overrides)


def _open_store(settings: Settings, *, sweep: bool = False) -> InstanceStore:
    """The store for one command. Only ``serve`` sweeps unfinished temporary files: any other
    command may run beside a serve whose writes they are."""
    store = InstanceStore(settings)
    store.open(sweep=sweep)
    return store


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from device_adapters.ecg.inbox import EcgInbox
    from dicom_gateway.ae import start_gateway, stop_gateway
    from dicom_gateway.forwarder import Forwarder
    from dicom_gateway.workers import GatewayWorkers
    from teleconsult.api.app import create_app
    from teleconsult.heap import freeze_startup_heap
    from teleconsult.malloc_tuning import tune_malloc
    from teleconsult.notifications.relay import UnixDatagramReceiver

    tune_malloc()  # before the threads that allocate
    # Before the sweep: a second serve on this data directory stops here.
    data_dir_lock = lock_data_directory(Path(settings.data_dir))
    processes = 1 if args.no_dicom else settings.gateway_processes()
    runtime_dirs.sweep_dead()  # what a killed serve could not remove
    metrics_dir = None
    if processes > 1:
        # Before anything is counted: every gateway process's counts reach /metrics.
        metrics_dir = runtime_dirs.private_dir("metrics")
        metrics.enable_multiprocess(metrics_dir)
    store = _open_store(settings, sweep=True)
    gateway = None
    tls_gateway = None
    forwarder = None
    workers = None
    relay = None
    ecg_inbox = None
    broker = None

    def _stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    # uvicorn restores these handlers after its own shutdown and re-raises
    # the signal: ours then unwinds through the finally below.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if settings.broker_url:
            from teleconsult.notifications.broker import RedisEventBroker

            broker = RedisEventBroker(settings.broker_url, settings.broker_channel)
            broker.check()
            broker.attach(store.bus)
            # only a process serving HTTP has sockets and an ECG analyser to hand others' events to
            broker.start(None if args.no_http else store.remote_bus)
        if not args.no_dicom:
            shared = processes > 1
            port = tls_port = None
            host = settings.dicom_host
            if settings.dicom_plain_enabled:
                gateway = start_gateway(settings, store, share_port=shared)
                host, port = gateway.server_address[:2]
            if settings.dicom_tls_port is not None:
                # DICOM TLS (docs/security.md): a listener of its own beside (or instead of) the plain one
                tls_gateway = start_gateway(settings, store, share_port=shared, tls=True)
                host, tls_port = tls_gateway.server_address[:2]
            if shared:
                # What workers store is published on their own bus: relayed to ours.
                relay = UnixDatagramReceiver(store.bus)
                relay.start()
                workers = GatewayWorkers(
                    settings,
                    host=host,
                    port=port,
                    count=processes - 1,
                    relay=relay.endpoint,
                    tls_port=tls_port,
                )
                workers.start()
            # The C-STORE SCU side: works the forwarding queue the store fills.
            forwarder = Forwarder(settings, store)
            forwarder.start()
        if settings.ecg_inbox_poll_seconds > 0:
            ecg_inbox = EcgInbox(settings, store)
            ecg_inbox.start()
        if args.no_http:
            freeze_startup_heap()
            threading.Event().wait()
        else:
            app = create_app(settings, store)
            config = uvicorn.Config(
                app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False
            )
            logger.info("HTTP API on http://%s:%d", settings.http_host, settings.http_port)
            frozen = freeze_startup_heap()
            logger.debug("start-up heap frozen: %d objects", frozen)
            uvicorn.Server(config).run()
    finally:
        if ecg_inbox is not None:
            ecg_inbox.stop()
        if forwarder is not None:
            forwarder.stop()
        if workers is not None:
            workers.stop()
        if relay is not None:
            relay.stop()
        if gateway is not None:
            stop_gateway(gateway)
        if tls_gateway is not None:
            stop_gateway(tls_gateway)
        if broker is not None:
            broker.stop()
        store.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        os.close(data_dir_lock)
        logger.info("stopped")
    return 0


def _find(settings: Settings, args: argparse.Namespace) -> int:
    store = _open_store(settings)
    try:
        studies = store.index.find_studies(
            StudyQuery(
                patient_name=args.patient_name,
                patient_id=args.patient_id,
                study_date=args.date,
                modality=args.modality,
                accession_number=args.accession_number,
                limit=args.limit,
            )
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps([_as_dict(study) for study in studies], ensure_ascii=False, indent=2))
        return 0
    for study in studies:
        print(
            f"{study.study_date or '-':8}  {study.patient_id:16}  {study.patient_name:30}  "
            f"{'/'.join(study.modalities_in_study):8}  {study.number_of_instances:5}  "
            f"{study.source_organisation:10}  {study.study_instance_uid}"
        )
    print(f"{len(studies)} studies", file=sys.stderr)
    return 0


def _as_dict(record: Any) -> dict[str, Any]:
    return {
        field.name: list(value) if isinstance(value := getattr(record, field.name), tuple) else value
        for field in dataclasses.fields(record)
    }


def _versions(settings: Settings, args: argparse.Namespace) -> int:
    store = _open_store(settings)
    try:
        rows = store.index.versions(args.sop_instance_uid)
    finally:
        store.close()
    if not rows:
        print(f"SOP instance {args.sop_instance_uid} is not stored", file=sys.stderr)
        return 1
    for row in rows:
        print(
            f"version {row['version']}{' (current)' if row['current'] else ''}  "
            f"received {row['received_at']}  from {row['calling_ae_title'] or '-'}  "
            f"{row['size']} bytes  sha256 {row['sha256']}"
        )
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    store = _open_store(settings)
    try:
        rows = store.index.versions(args.sop_instance_uid)
        wanted = [
            row
            for row in rows
            if (args.version_number is None and row["current"]) or row["version"] == args.version_number
        ]
        if not wanted:
            print(f"SOP instance {args.sop_instance_uid} has no such version", file=sys.stderr)
            return 1
        blocks = store.files.iter_chunks(wanted[0]["file_key"])  # streamed: files in S3 too
        try:
            with open(args.output, "wb") as out:
                for block in blocks:
                    out.write(block)
        except BaseException:
            args.output.unlink(missing_ok=True)
            raise
    finally:
        store.close()
    print(f"wrote {args.output}")
    return 0


def _check(settings: Settings) -> int:
    from sqlalchemy import select

    from teleconsult.storage.tables import Instance, InstanceVersion

    store = _open_store(settings)
    bad = checked = 0
    try:
        with store.index.engine.connect() as conn:
            for table in (Instance.__table__, InstanceVersion.__table__):
                for row in conn.execute(select(table.c.sop_instance_uid, table.c.file_key, table.c.sha256)):
                    checked += 1
                    try:
                        actual = store.files.data_set_sha256(row.file_key)
                    except (OSError, TeleconsultError) as exc:
                        actual = f"unreadable: {exc}"
                    if actual != row.sha256:
                        bad += 1
                        print(f"MISMATCH {row.sop_instance_uid} {row.file_key}: {actual}")
    finally:
        store.close()
    print(f"checked {checked} files, {bad} bad")
    return 1 if bad else 0


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    from teleconsult.backup import backup

    summary = backup(settings, args.destination)
    print(
        f"backed up {summary.studies} studies, {summary.instances} instances ({summary.database} index at "
        f"revision {summary.schema_revision}) to {args.destination}: {summary.files_copied} files copied "
        f"({summary.bytes_copied} bytes), {summary.files_already_there} already there"
    )
    return 0


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from teleconsult.backup import restore

    manifest = restore(settings, args.source)
    # a backup of an older version is brought to this version's schema
    _open_store(settings.model_copy(update={"database_auto_migrate": True})).close()
    print(
        f"restored {manifest.get('studies')} studies, {manifest.get('instances')} instances from the "
        f"backup of {manifest.get('created_at')} into {settings.data_dir}"
    )
    return 0


def _kiosk(settings: Settings, args: argparse.Namespace) -> int:
    """Kiosk tokens derive from the service secret: the same one ``serve`` uses (settings or data dir)."""
    from device_adapters.kiosk.devices import KioskRegistry
    from teleconsult.security import load_secret_key

    if args.kiosk_command == "list":
        for device_id, device in sorted(settings.kiosk_devices.items()):
            print(f"{device_id:24} {device.organisation:16} token generation {device.token_generation}")
        print(f"{len(settings.kiosk_devices)} kiosks", file=sys.stderr)
        return 0
    print(KioskRegistry(settings, load_secret_key(settings)).token(args.device_id))
    return 0


def _identity(settings: Settings, args: argparse.Namespace) -> int:
    from teleconsult.storage.identity import IdentityStore

    store = _open_store(settings)
    identity = IdentityStore(store.index.engine)
    try:
        if args.command == "org" and args.org_command == "add":
            org = identity.add_organisation(args.code, args.name, args.parent)
            print(f"added organisation {org.code}" + (f" under {org.parent_code}" if org.parent_code else ""))
        elif args.command == "org":
            for org in identity.organisations():
                print(f"{org.code:16} {org.parent_code or '-':16} {org.name}")
        elif args.user_command == "add":
            user = identity.add_user(args.username, args.password, args.role, args.org, args.display_name)
            print(f"added user {user.username} ({user.role.value}, {user.organisation})")
        elif args.user_command == "list":
            for account in identity.users():
                state = " (disabled)" if account.disabled else ""
                print(f"{account.username:24} {account.role.value:16} {account.organisation}{state}")
        else:
            identity.set_disabled(args.username, args.user_command == "disable")
            print(f"{args.username} {args.user_command}d")
    except ValueError as exc:
        print(f"teleconsult: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def _forward(settings: Settings, args: argparse.Namespace) -> int:
    store = _open_store(settings)
    try:
        outbox = store.outbox
        if args.forward_command == "retry":
            if args.all_failed == bool(args.ids):
                print("teleconsult: give either --all-failed or row ids", file=sys.stderr)
                return 2
            changed = outbox.retry(None if args.all_failed else args.ids)
            skipped = sorted(set(args.ids) - set(changed))
            print(f"{len(changed)} rows will be sent again: {' '.join(map(str, changed)) or '-'}")
            if skipped:
                print(
                    f"not changed (sent, being sent or unknown): {' '.join(map(str, skipped))}",
                    file=sys.stderr,
                )
            return 0
        entries = outbox.list_entries(status=args.status, limit=args.limit or None)
        counts = outbox.counts()
    finally:
        store.close()
    if args.json:
        print(json.dumps([entry.as_json() for entry in entries], ensure_ascii=False, indent=2))
        return 0
    for entry in entries:
        when = entry.sent_at if entry.status is ForwardStatus.SENT else entry.next_attempt_at
        print(
            f"{entry.pk:8}  {entry.status.value:8}  {entry.attempts:3}  {entry.destination_ae_title:16}  "
            f"{entry.rule:16}  {when:%Y-%m-%d %H:%M:%S}  {entry.sop_instance_uid}"
            + (
                f"\n          {entry.last_error}"
                if entry.last_error and entry.status is not ForwardStatus.SENT
                else ""
            )
        )
    print(", ".join(f"{count} {status}" for status, count in counts.items()), file=sys.stderr)
    return 0


def _worklist(settings: Settings, args: argparse.Namespace) -> int:
    from teleconsult.storage.worklist import add_item, cancel_item, list_items

    organisation = ""
    if args.worklist_command == "add":
        # Default: the organisation of the device the step is scheduled on.
        station = settings.peer(args.station_ae_title)
        organisation = args.organisation or (station.organisation if station is not None else "")
        if not organisation:
            print(
                f"teleconsult: give --organisation: station {args.station_ae_title!r} is not in "
                "TELECONSULT_DICOM_PEERS, so its organisation is unknown",
                file=sys.stderr,
            )
            return 1
    store = _open_store(settings)
    try:
        if args.worklist_command == "add":
            item = add_item(
                store.index,
                patient_id=args.patient_id,
                patient_name=args.patient_name,
                patient_birth_date=args.birth_date,
                patient_sex=args.sex or None,
                accession_number=args.accession_number,
                modality=args.modality,
                scheduled_station_ae_title=args.station_ae_title,
                scheduled_start=args.scheduled_start,
                procedure_description=args.procedure_description,
                requested_procedure_id=args.requested_procedure_id,
                organisation=organisation,
                study_instance_uid=args.study_instance_uid,
                uid_root=settings.uid_root,
            )
            print(
                f"worklist item {item.id} scheduled: accession {item.accession_number}, {item.modality} at "
                f"{item.scheduled_station_ae_title} on {item.scheduled_start_date} "
                f"{item.scheduled_start_time}, study {item.study_instance_uid}"
            )
            return 0
        if args.worklist_command == "cancel":
            item = cancel_item(store.index, args.item_id)
            print(f"worklist item {item.id} cancelled")
            return 0
        items = list_items(store.index, include_cancelled=args.all)
    finally:
        store.close()
    if args.json:
        print(json.dumps([item.as_json() for item in items], ensure_ascii=False, indent=2))
        return 0
    for item in items:
        print(
            f"{item.id:6}  {item.status.value:9}  {item.scheduled_start_date} {item.scheduled_start_time}  "
            f"{item.scheduled_station_ae_title:16}  {item.modality:4}  {item.accession_number:16}  "
            f"{item.patient_id:16}  {item.patient_name}"
        )
    print(f"{len(items)} items", file=sys.stderr)
    return 0


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    """``audit verify`` walks the chain; ``audit export`` writes ATNA XML and is itself recorded."""
    import getpass
    from datetime import datetime

    from teleconsult.atna import write_audit_messages
    from teleconsult.audit import AuditEvent, AuditLog, AuditOutcome, Interface

    bounds: dict[str, datetime] = {}
    for name in ("since", "until"):
        text = getattr(args, name, None)
        if text is None:
            continue
        try:
            bounds[name] = datetime.fromisoformat(text)
        except ValueError:
            print(
                f"teleconsult: --{name} {text!r} is not an ISO 8601 date or time "
                "(e.g. 2026-11-01 or 2026-11-01T08:00+08:00)",
                file=sys.stderr,
            )
            return 2
    store = _open_store(settings)
    audit = AuditLog(store.index.engine)
    try:
        if args.audit_command == "verify":
            intact, checked, broken = audit.verify()
            if not intact:
                print(
                    f"audit chain BROKEN at event {broken}: it does not follow from the {checked} events "
                    "before it, so the trail was changed or rows were removed"
                )
                return 1
            head = audit.head()
            # The head, noted elsewhere now and then, also shows a trail cut at its end.
            print(f"audit chain intact: {checked} events" + (f"; head {head[0]} {head[1]}" if head else ""))
            return 0
        count = write_audit_messages(audit.iter_events(**bounds), sys.stdout, source_id=settings.ae_title)
        sys.stdout.flush()
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        described = ", ".join(f"{name} {value.isoformat()}" for name, value in bounds.items())
        audit.record(
            AuditEvent(
                action="audit.export",
                outcome=AuditOutcome.SUCCESS,
                interface=Interface.CLI,
                actor=f"os:{user}",
                resource="teleconsult audit export",
                detail=f"{count} events exported as ATNA XML" + (f"; {described}" if described else ""),
            )
        )
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except (ValidationError, ValueError) as exc:
        print(f"teleconsult: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        if args.command == "serve":
            return _serve(settings, args)
        if args.command == "db":
            store = _open_store(settings.model_copy(update={"database_auto_migrate": True}))
            store.close()
            print("index is at the newest schema")
            return 0
        if args.command == "study":
            return _find(settings, args)
        if args.command == "instance":
            if args.instance_command == "versions":
                return _versions(settings, args)
            return _export(settings, args)
        if args.command == "store":
            return _check(settings)
        if args.command == "backup":
            return _backup(settings, args)
        if args.command == "restore":
            return _restore(settings, args)
        if args.command == "forward":
            return _forward(settings, args)
        if args.command in ("org", "user"):
            return _identity(settings, args)
        if args.command == "worklist":
            return _worklist(settings, args)
        if args.command == "audit":
            return _audit(settings, args)
        if args.command == "kiosk":
            return _kiosk(settings, args)
    except TeleconsultError as exc:
        print(f"teleconsult: {exc.message}", file=sys.stderr)
        return 1
    return 2
