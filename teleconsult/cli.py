"""The ``teleconsult`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from teleconsult import __version__
from teleconsult.config import Settings, settings_help
from teleconsult.domain.studies import StudyQuery
from teleconsult.errors import TeleconsultError
from teleconsult.log import configure_logging
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

    store = commands.add_parser("store", help="the file store")
    store_commands = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    store_commands.add_parser("check", help="verify every indexed file against its SHA-256")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides["config_file"] = args.config
    return Settings(**overrides)


def _open_store(settings: Settings) -> InstanceStore:
    store = InstanceStore(settings)
    store.open()
    return store


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from dicom_gateway.ae import start_gateway
    from teleconsult.api.app import create_app

    store = _open_store(settings)
    gateway = None

    def _stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    # uvicorn restores these handlers after its own shutdown and re-raises
    # the signal: ours then unwinds through the finally below.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if not args.no_dicom:
            gateway = start_gateway(settings, store)
        if args.no_http:
            threading.Event().wait()
        else:
            app = create_app(settings, store)
            config = uvicorn.Config(
                app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False
            )
            logger.info("HTTP API on http://%s:%d", settings.http_host, settings.http_port)
            uvicorn.Server(config).run()
    finally:
        if gateway is not None:
            gateway.shutdown()
        store.close()
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
        args.output.write_bytes(store.files.read(wanted[0]["file_key"]))
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
    except TeleconsultError as exc:
        print(f"teleconsult: {exc.message}", file=sys.stderr)
        return 1
    return 2
