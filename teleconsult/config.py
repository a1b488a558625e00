"""Settings: the only place the environment is read.

Field names map one to one onto the contract variable names in DESIGN.md
(``TELECONSULT_HTTP_PORT``, ``TELECONSULT_DICOM_PEERS`` ...), so the settings
are a flat model grouped by name prefix (``http_*``, ``dicom_*``, ``storage``)
rather than nested sub-models: nested models would have forced a ``__``
delimiter into variables that hospitals already script against.
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from teleconsult.domain.identity import check_organisation_code

__all__ = [
    "ENV_PREFIX",
    "SOURCE_PACS",
    "DicomPeer",
    "ForwardRule",
    "IceServer",
    "KioskDevice",
    "Settings",
    "bucket_and_prefix",
    "normalise_fingerprint",
    "settings_help",
]

ENV_PREFIX = "TELECONSULT_"

# PS3.5 6.2: AE is 16 characters of the default repertoire without backslash
# or control characters; leading and trailing spaces are not significant.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def _check_ae_title(value: str, field: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_TITLE.match(value):
        raise ValueError(
            f"{field} {value!r} is not a valid AE title: use 1-16 printable "
            "ASCII characters without backslash"
        )
    return stripped


class DicomPeer(BaseModel):
    """A known DICOM application entity: a township device, a PACS, a viewer."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    organisation: str = Field(min_length=1, max_length=64)
    pacs: bool = Field(
        False,
        description='Whether this is its organisation\'s PACS (what "source-pacs" in a forward rule means).',
    )
    # DICOM TLS (docs/security.md): who the peer is, proved by its certificate.
    tls: bool = Field(
        False,
        description=(
            "DICOM TLS with this peer: we connect to it over TLS (port is then its TLS port), and its "
            "associations are accepted only on the TLS port, never on the plain one."
        ),
    )
    tls_certificate_sha256: list[str] = Field(
        default_factory=list,
        description=(
            "SHA-256 fingerprints of the certificates the peer may present (openssl x509 -noout "
            "-fingerprint -sha256 -in cert.pem); list the old and the new one while renewing."
        ),
    )
    tls_common_name: str | None = Field(
        None,
        description="Subject common name (CN) the peer's certificate must carry.",
        min_length=1,
        max_length=256,
    )
    tls_server_name: str | None = Field(
        None,
        description=(
            "Name the peer's certificate must carry (subjectAltName DNS or IP) when we connect to it; "
            "unset = host."
        ),
        min_length=1,
        max_length=253,
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return _check_ae_title(value, "peer ae_title")

    @field_validator("tls_certificate_sha256")
    @classmethod
    def _fingerprints(cls, value: list[str]) -> list[str]:
        return [normalise_fingerprint(fingerprint) for fingerprint in value]

    @property
    def tls_identity_configured(self) -> bool:
        """Whether a certificate can prove this peer's identity (fingerprint or common name)."""
        return bool(self.tls_certificate_sha256) or self.tls_common_name is not None


_FINGERPRINT_PREFIX = re.compile(r"^\s*(sha-?256\s+fingerprint\s*=\s*)?", re.IGNORECASE)


def normalise_fingerprint(value: str) -> str:
    """``AB:CD:…`` (64 upper-case hex digits in pairs), as ``openssl x509 -fingerprint -sha256`` prints it.

    Accepts that command's whole output line, colons or none, any case.
    """
    digits = re.sub(r"[\s:]", "", _FINGERPRINT_PREFIX.sub("", value)).upper()
    if not re.fullmatch(r"[0-9A-F]{64}", digits):
        raise ValueError(
            f"peer tls_certificate_sha256 {value[:100]!r} is not a SHA-256 fingerprint: give the 64 hex "
            "digits that `openssl x509 -noout -fingerprint -sha256 -in cert.pem` prints"
        )
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


# Destination of a forward rule meaning "the PACS peer of the instance's source
# organisation": one rule returns every township's reports to its own PACS.
SOURCE_PACS = "source-pacs"


class ForwardRule(BaseModel):
    """Which stored instances the forwarding queue sends to which peer.

    An instance matches when its source organisation, modality and SOP class
    are all listed (``modalities`` / ``sop_classes`` left out match any).
    ``from_organisations`` has no default: forwarding patient data outside
    the organisation that produced it must be asked for explicitly (``["*"]``
    for every organisation).
    """

    name: str = Field(min_length=1, max_length=64)
    from_organisations: list[str] = Field(min_length=1)
    modalities: list[str] | None = None
    sop_classes: list[str] | None = None
    destination: str

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [modality.strip().upper() for modality in value]

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value == SOURCE_PACS:
            return value
        return _check_ae_title(value, "forward rule destination")


_KIOSK_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KioskDevice(BaseModel):
    """A registered health kiosk: the organisation (village clinic) its measurements belong to.

    ``token_generation`` is part of the device's HTTP token (derived from the
    service secret, ``teleconsult kiosk token DEVICE``): raise it to revoke a
    leaked token without touching the other kiosks.
    """

    organisation: str
    token_generation: int = Field(1, ge=1, le=1_000_000)

    @field_validator("organisation")
    @classmethod
    def _organisation(cls, value: str) -> str:
        try:
            return check_organisation_code(value)
        except ValueError as exc:
            raise ValueError(f"TELECONSULT_KIOSK_DEVICES organisation: {exc}") from None


_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


class IceServer(BaseModel):
    """A STUN or TURN server for live exams, as WebRTC's RTCIceServer names it.

    The same list goes to the server's peer connections and, in the live
    session's answer, to the clients', so both ends can meet through one relay.
    """

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(_ICE_SCHEMES):
                raise ValueError(
                    f"TELECONSULT_ICE_SERVERS url {url[:80]!r} must start with stun:, stuns:, turn: or turns:"
                )
        return value

    @model_validator(mode="after")
    def _turn_credentials(self) -> IceServer:
        if any(url.startswith(("turn:", "turns:")) for url in self.urls) and not (
            self.username and self.credential
        ):
            raise ValueError(
                f"TELECONSULT_ICE_SERVERS entry {self.urls[0][:80]!r} is a TURN server: "
                'give it "username" and "credential"'
            )
        return self


class Settings(BaseSettings):
    """Every setting of teleconsult; ``teleconsult --help`` lists them."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # Errors name the setting and say what is wrong, never echo the value: a rejected value may be a
        # secret (TELECONSULT_SECRET_KEY, TELECONSULT_TURN_SECRET) and `teleconsult` prints them.
        hide_input_in_errors=True,
    )

    # storage
    data_dir: Path = Field(
        Path("data"),
        description="Directory for DICOM files, temporary files and the embedded SQLite index.",
    )
    database_url: str | None = Field(
        None,
        description=(
            "SQLAlchemy URL of the index, e.g. postgresql://user@host/db; "
            "unset = SQLite at <data_dir>/index.sqlite3."
        ),
    )
    database_auto_migrate: bool = Field(
        True, description="Apply database migrations when a command opens the index."
    )
    storage_url: str | None = Field(
        None,
        description=(
            "Where DICOM files live: s3://bucket[/prefix] for S3-compatible object storage (credentials from "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the other standard AWS sources); unset = "
            "<data_dir>/dicom."
        ),
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Endpoint of a non-AWS S3 service (MinIO, Ceph ...), e.g. http://minio:9000; unset = AWS",
    )
    s3_region: str | None = Field(
        None, description="Region of the bucket; unset = AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."
    )
    s3_cache_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description=(
            "Size of the read-through cache of objects under <data_dir>/cache/s3 (rendering, frames, "
            "metadata, C-GET/C-MOVE, forwarding read local copies), least recently used evicted first."
        ),
    )
    uid_root: str | None = Field(
        None,
        description="Registered UID root for UIDs teleconsult creates; unset = 2.25.<uuid> UIDs.",
    )

    # http
    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP API.")
    http_max_upload_bytes: int = Field(
        2 * 1024**3,
        ge=1024,
        description="Largest request body accepted (STOW-RS), in bytes; larger ones get 413.",
    )
    http_qido_max_results: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="Most matches one QIDO-RS response returns; more are paged with limit/offset.",
    )
    http_allowed_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Web origins (https://host[:port]) besides the server's own whose pages may open its "
            'WebSockets, as a JSON list; ["*"] allows any. A browser opening one from another site is '
            "refused at the handshake (403); clients that send no Origin (devices, scripts) are not."
        ),
    )

    # dicom
    ae_title: str = Field("TELECONSULT", description="AE title of the DICOM gateway.")
    dicom_host: str = Field(
        "127.0.0.1",
        description="Address the DICOM gateway listens on (0.0.0.0 to accept devices on the network).",
    )
    dicom_port: int = Field(11112, ge=0, le=65535, description="Port of the DICOM gateway.")
    dicom_peers: list[DicomPeer] = Field(
        default_factory=list,
        description=(
            'JSON list of known peers: [{"ae_title": "US1", "host": "10.0.0.5", '
            '"port": 104, "organisation": "TOWN01"}].'
        ),
    )
    dicom_accept_unknown: bool = Field(
        False,
        description="Open mode: accept associations from calling AE titles that are not peers.",
    )
    dicom_unknown_organisation: str = Field(
        "UNKNOWN",
        description="Organisation recorded for instances from unknown peers in open mode.",
    )
    dicom_workers: int = Field(
        0,
        ge=0,
        le=64,
        description=(
            "Gateway processes sharing the DICOM port (SO_REUSEPORT, Linux); one process uses "
            "about one core. 0 = one per CPU this process may run on."
        ),
    )
    dicom_max_associations: int = Field(
        32,
        ge=1,
        le=1024,
        description=(
            "Concurrent associations per gateway process (and per listener: plain, TLS); more are "
            "rejected (transient). N gateway processes take up to N times as many."
        ),
    )
    broker_url: str | None = Field(
        None,
        description=(
            "Broker carrying events between replicas, redis://host:6379/0 (or rediss://); unset = "
            "one server, events stay in the process."
        ),
    )
    broker_channel: str = Field(
        "teleconsult.events",
        min_length=1,
        max_length=200,
        description="Redis stream the replicas of one deployment share (another name per deployment).",
    )
    replica_url: str | None = Field(
        None,
        description=(
            "This replica's own base URL as the other replicas reach it (http://10.0.0.11:8000), for "
            "live exams on several HTTP replicas: each records the sessions it holds in the shared "
            "index, and relays requests and signalling sockets for another's sessions there. Unset "
            "= live exams stay on the replica asked (route /api/live-sessions to one replica)."
        ),
    )
    dicom_max_pdu: int = Field(
        262144,
        ge=0,
        description="Maximum PDU size the gateway receives, in bytes (0 = unlimited).",
    )
    dicom_acse_timeout: float = Field(30.0, gt=0, description="ACSE timeout in seconds.")
    dicom_dimse_timeout: float = Field(60.0, gt=0, description="DIMSE timeout in seconds.")
    dicom_network_timeout: float = Field(60.0, gt=0, description="Seconds an idle association is kept open.")
    dicom_max_instance_bytes: int = Field(
        4 * 1024**3,
        ge=1024,
        description="Largest data set accepted in one C-STORE, in bytes.",
    )

    # dicom TLS (PS3.15 B.10 Non-downgrading BCP 195 profile; docs/security.md)
    dicom_plain_enabled: bool = Field(
        True,
        description=(
            "Listen on the plain (unencrypted) DICOM port TELECONSULT_DICOM_PORT; false = DICOM TLS only."
        ),
    )
    dicom_tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "Port of the DICOM TLS listener (IANA dicom-tls: 2762), on TELECONSULT_DICOM_HOST; unset = "
            "no TLS listener. Clients must present a certificate the CAs below signed."
        ),
    )
    dicom_tls_certificate: Path | None = Field(
        None,
        description=(
            "PEM certificate (then its intermediate CAs) teleconsult presents on the TLS port and to the "
            "TLS peers it connects to."
        ),
    )
    dicom_tls_private_key: Path | None = Field(
        None,
        description="PEM private key of that certificate, unencrypted (readable by teleconsult only).",
    )
    dicom_tls_ca_certificates: Path | None = Field(
        None,
        description=(
            "PEM bundle of the CAs teleconsult trusts: clients on the TLS port and the TLS peers it "
            "connects to must present a certificate one of them signed."
        ),
    )

    # dicom forwarding (C-STORE SCU through the durable queue)
    dicom_forward_rules: list[ForwardRule] = Field(
        default_factory=list,
        description=(
            'JSON list of forward rules: [{"name": "county-pacs", "from_organisations": ["TOWN01"], '
            '"modalities": ["SR", "DOC", "OT"], "destination": "COUNTYPACS"}]; destination is a peer '
            'AE title or "source-pacs" (the peer marked "pacs": true of the source organisation).'
        ),
    )
    dicom_forward_stable_seconds: float = Field(
        10.0,
        ge=0,
        description="A study is forwarded once no new instance of it arrived for this many seconds.",
    )
    dicom_forward_retry_base_seconds: float = Field(
        10.0, gt=0, description="First retry delay after a failed forward; doubles with each attempt."
    )
    dicom_forward_max_retry_seconds: float = Field(
        3600.0, gt=0, description="Longest delay between two forward attempts."
    )
    dicom_forward_max_attempts: int = Field(
        0, ge=0, description="Attempts before a forward is marked failed (0 = retry forever)."
    )
    dicom_forward_workers: int = Field(
        1, ge=1, le=32, description="Forwarding threads (each sends one study over one association)."
    )

    # identity
    secret_key: str | None = Field(
        None,
        description=(
            "Key that signs access tokens (32+ characters); unset = a random key kept in "
            "<data_dir>/secret.key (every replica must share one key)."
        ),
    )
    access_token_minutes: int = Field(15, ge=1, le=24 * 60, description="Lifetime of an access token.")
    refresh_token_hours: int = Field(12, ge=1, le=24 * 30, description="Lifetime of a refresh token.")

    # consults and reports
    consult_sla_minutes_critical: int = Field(
        30, ge=1, description="Minutes from request to signed report for a critical consult."
    )
    consult_sla_minutes_stat: int = Field(
        60, ge=1, description="Minutes from request to signed report for a STAT consult."
    )
    consult_sla_minutes_urgent: int = Field(
        4 * 60, ge=1, description="Minutes from request to signed report for an urgent consult."
    )
    consult_sla_minutes_routine: int = Field(
        48 * 60, ge=1, description="Minutes from request to signed report for a routine consult."
    )
    consult_overdue_check_seconds: float = Field(
        30.0,
        ge=0,
        description="How often the API process looks for overdue consults and escalates them (0 = never).",
    )
    consult_require_performing_signature: bool = Field(
        True,
        description=(
            "A report becomes final only once the township author has signed it as performing "
            "physician (co-signed reports)."
        ),
    )
    report_font: Path | None = Field(
        None,
        description=(
            "CJK TrueType font (.ttf, or .ttc with TrueType outlines) embedded in signed-report PDFs; "
            "unset = the first Debian CJK font found (fonts-wqy-microhei, fonts-wqy-zenhei, "
            "fonts-arphic-*, fonts-droid-fallback), else the viewer's built-in STSong-Light."
        ),
    )

    # log
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text for a terminal, json for containers."
    )
    log_dicom_identifiers: bool = Field(
        False,
        description="Log DICOM identifiers and patient attributes (off in production).",
    )

    # devices (device_adapters: ECG files from carts that do not speak DICOM)
    ecg_inbox: Path | None = Field(
        None,
        description=(
            "Drop folder for ECG files (SCP-ECG, HL7 aECG, WFDB, CSV); unset = <data_dir>/inbox/ecg. "
            "A file in a subfolder named after an organisation code belongs to that organisation."
        ),
    )
    ecg_inbox_organisation: str | None = Field(
        None,
        description=(
            "Organisation of ECG files dropped at the top of the inbox rather than in an organisation's "
            "subfolder; unset = such files are quarantined."
        ),
    )
    ecg_inbox_poll_seconds: float = Field(
        2.0,
        ge=0,
        description=(
            "How often serve reads the ECG inbox, besides when a file event wakes it (0 = the inbox is "
            "not watched)."
        ),
    )
    ecg_inbox_settle_seconds: float = Field(
        2.0,
        ge=0,
        description=(
            "A dropped ECG file that no file event reported complete (closed by its writer, renamed in) "
            "is taken once its size and modification time have not changed for this long (files named "
            "*.part are never taken: write NAME.part, then rename it)."
        ),
    )
    ecg_inbox_incomplete_seconds: float = Field(
        600.0,
        ge=0,
        description=(
            "A WFDB header still missing a signal file, or a signal file without its header, is "
            "quarantined after this long."
        ),
    )
    ecg_max_file_bytes: int = Field(
        64 * 1024**2,
        ge=1024,
        description=(
            "Largest ECG file (or WFDB record) imported, in bytes; larger ones are quarantined, or "
            "refused with 413 when uploaded."
        ),
    )
    ecg_scp_text_encoding: str | None = Field(
        None,
        description=(
            "Character set of SCP-ECG Section 1 text (e.g. gb18030), overriding the file's language "
            "support code, for carts that declare one character set and write another."
        ),
    )

    # ECG triage (device_adapters/ecg/triage): every stored ECG measured and screened in the HTTP process
    ecg_triage_enabled: bool = Field(
        True,
        description=(
            "Measure and screen every stored 12-lead ECG (STEMI criteria, urgent rate); a positive screen "
            "opens a critical consult and raises alert.critical. Decision support: findings need physician "
            "confirmation."
        ),
    )
    ecg_triage_scan_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "How often the ECG analyser also looks for stored ECGs without measurements (it always does at "
            "start-up; new ECGs are analysed as they are stored)."
        ),
    )
    ecg_triage_catch_up_hours: float = Field(
        24.0,
        gt=0,
        description=(
            "The analyser's look for ECGs without measurements takes only those received in the last this "
            "many hours: an alert about an older tracing comes too late to act on, and a database that "
            "predates the triage would otherwise flood the county with critical consults for its history."
        ),
    )
    ecg_triage_st_elevation_mv: float = Field(
        0.1, gt=0, le=1, description="ST elevation (mV; 0.1 mV = 1 mm) that counts in leads other than V2-V3."
    )
    ecg_triage_st_elevation_v2v3_men_mv: float = Field(
        0.2, gt=0, le=1, description="ST elevation (mV) that counts in V2-V3 for men aged 40 or more."
    )
    ecg_triage_st_elevation_v2v3_young_men_mv: float = Field(
        0.25, gt=0, le=1, description="ST elevation (mV) that counts in V2-V3 for men under 40."
    )
    ecg_triage_st_elevation_v2v3_women_mv: float = Field(
        0.15,
        gt=0,
        le=1,
        description=(
            "ST elevation (mV) that counts in V2-V3 for women; without a recorded sex the lowest V2-V3 "
            "threshold applies."
        ),
    )
    ecg_triage_bradycardia_bpm: float = Field(
        40.0, gt=0, description="A heart rate under this (per minute) is an urgent finding."
    )
    ecg_triage_tachycardia_bpm: float = Field(
        150.0, gt=0, description="A heart rate over this (per minute) is an urgent finding."
    )

    # health kiosks (device_adapters/kiosk: vital signs over MQTT or HTTP)
    kiosk_devices: dict[str, KioskDevice] = Field(
        default_factory=dict,
        description=(
            'JSON object of registered kiosks, device id -> organisation code: {"KIOSK-V21-01": '
            '"VILLAGE21"} (or {"organisation": "VILLAGE21", "token_generation": 2}); measurements from '
            "any other device are refused."
        ),
    )
    mqtt_url: str | None = Field(
        None,
        description=(
            "MQTT broker the HTTP process subscribes to for kiosk measurements "
            "(teleconsult/kiosk/+/measurements, QoS 1), e.g. mqtt://127.0.0.1:1883 or "
            "mqtts://user:password@broker:8883; unset = no MQTT."
        ),
    )
    mqtt_client_id: str | None = Field(
        None,
        description=(
            "MQTT client id; set = a persistent session, so the broker keeps QoS 1 messages while "
            "teleconsult restarts (one subscriber per id); unset = a random id and a clean session."
        ),
    )
    kiosk_alert_systolic_mmhg: float = Field(
        180.0, gt=0, description="Kiosk systolic blood pressure at or above which alert.critical is raised."
    )
    kiosk_alert_diastolic_mmhg: float = Field(
        110.0, gt=0, description="Kiosk diastolic blood pressure at or above which alert.critical is raised."
    )
    kiosk_alert_glucose_high_mmol_l: float = Field(
        16.7, gt=0, description="Kiosk blood glucose (mmol/L) at or above which alert.critical is raised."
    )
    kiosk_alert_glucose_low_mmol_l: float = Field(
        3.0, ge=0, description="Kiosk blood glucose (mmol/L) at or below which alert.critical is raised."
    )
    kiosk_alert_spo2_below_percent: float = Field(
        90.0, ge=0, le=100, description="Kiosk SpO2 (%) below which alert.critical is raised."
    )
    kiosk_alert_temperature_celsius: float = Field(
        39.5, gt=0, description="Kiosk body temperature (°C) at or above which alert.critical is raised."
    )

    # live exams (teleconsult/media: WebRTC through the server)
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description=(
            "JSON list of STUN/TURN servers for live exams, given to the server's and the clients' peer "
            'connections: [{"urls": ["turn:turn.county.example:3478"], "username": "u", '
            '"credential": "p"}]; empty = host candidates only (one network, or loopback).'
        ),
    )
    turn_urls: list[str] = Field(
        default_factory=list,
        description=(
            'JSON list of the URLs of a TURN server run with use-auth-secret (coturn): ["turn:turn.county.'
            'example:3478?transport=udp", "turns:turn.county.example:5349?transport=tcp"]; every participant '
            "of a live session is given them with time-limited credentials of its own (needs "
            "TELECONSULT_TURN_SECRET); empty = no credentials issued."
        ),
    )
    turn_secret: SecretStr | None = Field(
        None,
        description=(
            "The TURN server's static-auth-secret (coturn), 16+ characters: teleconsult signs the TURN "
            "credentials it issues with it; it is never sent to clients nor logged."
        ),
    )
    turn_ttl_seconds: int = Field(
        4 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description=(
            "How long an issued TURN credential can open a relay (the TURN server checks it when a "
            "relay is allocated); at least TELECONSULT_LIVE_MAX_SECONDS, since clients reuse theirs "
            "when they reconnect during the session."
        ),
    )
    turn_for_server: bool = Field(
        False,
        description=(
            "The server's own peer connections relay through the TURN server too (credentials issued to "
            "themselves): for a server whose own addresses the clients cannot reach (a container on a "
            "bridge network, a server behind NAT); false = the server offers its host candidates only."
        ),
    )
    live_idle_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A live session ends once it has had no connected sender for this many seconds.",
    )
    live_max_seconds: float = Field(
        4 * 3600.0, gt=0, description="A live session ends after this many seconds, whatever happens."
    )
    live_max_viewers: int = Field(
        8,
        ge=1,
        le=64,
        description="Viewers one live session takes at once.",
    )
    live_video_bitrate: int = Field(
        600_000,
        ge=0,
        le=20_000_000,
        description=(
            "Bits per second of the one VP8 encoding every viewer of a live session receives (0 = an "
            "encoder per viewer, each adapting to its own network, a fifth of a core per 720p viewer)."
        ),
    )
    live_recording: bool = Field(
        True,
        description=(
            "Record every live session (the sender's video, both sides' voices) to "
            "<data_dir>/recordings/<consult>/<session>.mp4, listed and downloaded over the API; "
            "encoding H.264 costs about what one and a half viewers' encoders cost (docs/live.md)."
        ),
    )
    live_recording_retention_days: float = Field(
        0.0,
        ge=0,
        description=(
            "Recordings older than this many days are deleted (audited as live.recording.delete); "
            "0 = kept until removed by hand."
        ),
    )
    live_clip_max_seconds: float = Field(
        30.0,
        gt=0,
        le=120,
        description="Longest clip of a live session stored as multi-frame DICOM (POST .../clip).",
    )

    config_file: Path | None = Field(
        None, description="TOML file with settings (same names, lower case, no prefix)."
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return _check_ae_title(value, "TELECONSULT_AE_TITLE")

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError("TELECONSULT_SECRET_KEY must be at least 32 characters")
        return value

    @field_validator("report_font")
    @classmethod
    def _report_font(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"TELECONSULT_REPORT_FONT {str(value)!r} is not a font file")
        return value

    @field_validator("ecg_inbox_organisation")
    @classmethod
    def _ecg_inbox_organisation(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_organisation_code(value)
        except ValueError as exc:
            raise ValueError(f"TELECONSULT_ECG_INBOX_ORGANISATION: {exc}") from None

    @field_validator("kiosk_devices", mode="before")
    @classmethod
    def _kiosk_devices_shorthand(cls, value: object) -> object:
        """``{"KIOSK01": "VILLAGE21"}`` is short for ``{"KIOSK01": {"organisation": "VILLAGE21"}}``."""
        if isinstance(value, dict):
            return {key: {"organisation": v} if isinstance(v, str) else v for key, v in value.items()}
        return value

    @field_validator("kiosk_devices")
    @classmethod
    def _kiosk_device_ids(cls, value: dict[str, KioskDevice]) -> dict[str, KioskDevice]:
        for device_id in value:
            if not _KIOSK_DEVICE_ID.match(device_id):
                raise ValueError(
                    f"TELECONSULT_KIOSK_DEVICES device id {device_id[:70]!r} must be 1-64 letters, digits, "
                    "'.', '_' or '-' (it is an MQTT topic level), starting with a letter or digit"
                )
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        bucket_and_prefix(value)  # raises ValueError naming the setting
        return value.strip()

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                f"TELECONSULT_S3_ENDPOINT_URL {value[:100]!r} must be http(s)://host[:port] (e.g. "
                "http://minio:9000)"
            )
        return value.strip()

    @field_validator("replica_url")
    @classmethod
    def _replica_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path.strip("/"):
            raise ValueError(
                f"TELECONSULT_REPLICA_URL {value[:100]!r} must be http(s)://host[:port], the address other "
                "replicas reach this one at (e.g. http://10.0.0.11:8000)"
            )
        return value.strip().rstrip("/")

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
            raise ValueError(
                "TELECONSULT_BROKER_URL must be redis://host[:port][/db] or rediss://... (Redis Streams; "
                "NATS is not supported yet)"
            )
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ValueError(
                "TELECONSULT_MQTT_URL must be mqtt://host[:port] or mqtts://[user:password@]host[:port]"
            )
        try:
            parsed.port  # noqa: B018 - raises on a port out of range
        except ValueError:
            raise ValueError("TELECONSULT_MQTT_URL has an invalid port") from None
        return value

    @field_validator("turn_urls")
    @classmethod
    def _turn_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("turn:", "turns:")) or len(url) > 512:
                raise ValueError(
                    f"TELECONSULT_TURN_URLS url {url[:80]!r} must start with turn: or turns: "
                    "(STUN servers go in TELECONSULT_ICE_SERVERS)"
                )
        return value

    @field_validator("turn_secret")
    @classmethod
    def _turn_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("TELECONSULT_TURN_SECRET must be at least 16 characters (openssl rand -hex 32)")
        return value

    @model_validator(mode="after")
    def _turn_consistent(self) -> Settings:
        if bool(self.turn_urls) != (self.turn_secret is not None):
            given, missing = (
                ("TELECONSULT_TURN_URLS", "TELECONSULT_TURN_SECRET")
                if self.turn_urls
                else ("TELECONSULT_TURN_SECRET", "TELECONSULT_TURN_URLS")
            )
            raise ValueError(f"{given} is set but {missing} is not: TURN credentials need both")
        if self.turn_for_server and not self.turn_urls:
            raise ValueError(
                "TELECONSULT_TURN_FOR_SERVER needs TELECONSULT_TURN_URLS and TELECONSULT_TURN_SECRET"
            )
        if self.turn_urls and self.turn_ttl_seconds < self.live_max_seconds:
            raise ValueError(
                f"TELECONSULT_TURN_TTL_SECONDS ({self.turn_ttl_seconds}) is shorter than "
                f"TELECONSULT_LIVE_MAX_SECONDS ({self.live_max_seconds:g}): a participant reconnecting late "
                "in a session would be refused by the TURN server; raise it"
            )
        return self

    @model_validator(mode="after")
    def _kiosk_alert_glucose_ordered(self) -> Settings:
        if self.kiosk_alert_glucose_low_mmol_l >= self.kiosk_alert_glucose_high_mmol_l:
            raise ValueError(
                "TELECONSULT_KIOSK_ALERT_GLUCOSE_LOW_MMOL_L must be below "
                "TELECONSULT_KIOSK_ALERT_GLUCOSE_HIGH_MMOL_L"
            )
        return self

    @field_validator("ecg_scp_text_encoding")
    @classmethod
    def _ecg_scp_text_encoding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"TELECONSULT_ECG_SCP_TEXT_ENCODING {value!r} is not a character set Python knows "
                "(e.g. gb18030, utf-8, latin-1)"
            ) from None
        return value

    @field_validator("uid_root")
    @classmethod
    def _uid_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", value) or len(value) > 40:
            raise ValueError(
                f"TELECONSULT_UID_ROOT {value!r} must be a dotted numeric UID root of at most 40 characters"
            )
        return value

    @model_validator(mode="after")
    def _peers_unique(self) -> Settings:
        seen: set[str] = set()
        for peer in self.dicom_peers:
            if peer.ae_title in seen:
                raise ValueError(
                    f"TELECONSULT_DICOM_PEERS lists AE title {peer.ae_title!r} "
                    "twice; each peer needs its own AE title"
                )
            seen.add(peer.ae_title)
        return self

    @model_validator(mode="after")
    def _dicom_tls_consistent(self) -> Settings:
        if not self.dicom_plain_enabled and self.dicom_tls_port is None:
            raise ValueError(
                "TELECONSULT_DICOM_PLAIN_ENABLED is false but TELECONSULT_DICOM_TLS_PORT is unset: "
                "the gateway would listen nowhere"
            )
        if self.dicom_plain_enabled and self.dicom_tls_port and self.dicom_tls_port == self.dicom_port:
            raise ValueError(
                f"TELECONSULT_DICOM_TLS_PORT and TELECONSULT_DICOM_PORT are both {self.dicom_port}; "
                "TLS needs a port of its own (IANA dicom-tls: 2762)"
            )
        tls_peers = [peer.ae_title for peer in self.dicom_peers if peer.tls]
        if self.dicom_tls_port is not None or tls_peers:
            why = (
                "TELECONSULT_DICOM_TLS_PORT is set"
                if self.dicom_tls_port is not None
                else f"peer {tls_peers[0]!r} uses TLS"
            )
            for name in ("dicom_tls_certificate", "dicom_tls_private_key", "dicom_tls_ca_certificates"):
                path = getattr(self, name)
                if path is None:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()} must be set: {why}")
                if not path.is_file():
                    raise ValueError(f"{ENV_PREFIX}{name.upper()} {str(path)!r} is not a file")
        # One certificate must never prove the identity of two organisations.
        owners: dict[str, DicomPeer] = {}
        for peer in self.dicom_peers:
            keys = [f"SHA-256 {f}" for f in peer.tls_certificate_sha256]
            if peer.tls_common_name is not None and not peer.tls_certificate_sha256:
                keys.append(f"common name {peer.tls_common_name!r}")
            for key in keys:
                other = owners.setdefault(key, peer)
                if other.organisation != peer.organisation:
                    raise ValueError(
                        f"TELECONSULT_DICOM_PEERS gives peers {other.ae_title!r} (organisation "
                        f"{other.organisation}) and {peer.ae_title!r} (organisation {peer.organisation}) "
                        f"the same certificate identity ({key}); a certificate must identify one "
                        "organisation"
                    )
        return self

    @model_validator(mode="after")
    def _ecg_triage_rates_ordered(self) -> Settings:
        if self.ecg_triage_bradycardia_bpm >= self.ecg_triage_tachycardia_bpm:
            raise ValueError(
                f"TELECONSULT_ECG_TRIAGE_BRADYCARDIA_BPM ({self.ecg_triage_bradycardia_bpm:g}) must be below "
                f"TELECONSULT_ECG_TRIAGE_TACHYCARDIA_BPM ({self.ecg_triage_tachycardia_bpm:g})"
            )
        return self

    @model_validator(mode="after")
    def _consult_sla_ordered(self) -> Settings:
        """A more urgent consult never gets a later deadline than a less urgent one."""
        order = ("critical", "stat", "urgent", "routine")
        for faster, slower in itertools.pairwise(order):
            a = getattr(self, f"consult_sla_minutes_{faster}")
            b = getattr(self, f"consult_sla_minutes_{slower}")
            if a > b:
                raise ValueError(
                    f"TELECONSULT_CONSULT_SLA_MINUTES_{faster.upper()} ({a}) is longer than "
                    f"TELECONSULT_CONSULT_SLA_MINUTES_{slower.upper()} ({b}); a more urgent consult "
                    "needs the shorter deadline"
                )
        return self

    @model_validator(mode="after")
    def _forward_rules_valid(self) -> Settings:
        """Refuse at start-up a rule that could never deliver, rather than queueing forever."""
        pacs_of: dict[str, str] = {}
        for peer in self.dicom_peers:
            if not peer.pacs:
                continue
            if peer.organisation in pacs_of:
                raise ValueError(
                    f"TELECONSULT_DICOM_PEERS marks both {pacs_of[peer.organisation]!r} and "
                    f"{peer.ae_title!r} as the PACS of organisation {peer.organisation!r}; "
                    'set "pacs": true on one of them'
                )
            pacs_of[peer.organisation] = peer.ae_title
        names: set[str] = set()
        for rule in self.dicom_forward_rules:
            if rule.name in names:
                raise ValueError(
                    f"TELECONSULT_DICOM_FORWARD_RULES names two rules {rule.name!r}; give each its own name"
                )
            names.add(rule.name)
            if rule.destination == SOURCE_PACS:
                if not pacs_of:
                    raise ValueError(
                        f"TELECONSULT_DICOM_FORWARD_RULES rule {rule.name!r} sends to {SOURCE_PACS!r} but no "
                        'peer in TELECONSULT_DICOM_PEERS is marked "pacs": true'
                    )
            elif self.peer(rule.destination) is None:
                raise ValueError(
                    f"TELECONSULT_DICOM_FORWARD_RULES rule {rule.name!r}: destination "
                    f"{rule.destination!r} is not a configured peer; add it to "
                    f"TELECONSULT_DICOM_PEERS or use {SOURCE_PACS!r}"
                )
        return self

    @property
    def index_url(self) -> str:
        """The database URL actually used, with the SQLite default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def ecg_inbox_dir(self) -> Path:
        """The ECG drop folder actually watched, with the default filled in."""
        return self.ecg_inbox if self.ecg_inbox is not None else self.data_dir / "inbox" / "ecg"

    @property
    def recordings_dir(self) -> Path:
        """Where live sessions are recorded (``<data_dir>/recordings``)."""
        return self.data_dir / "recordings"

    @property
    def quarantine_dir(self) -> Path:
        """Where files that cannot be imported are moved, each with a reason beside it."""
        return self.data_dir / "quarantine"

    def gateway_processes(self) -> int:
        """How many gateway processes ``serve`` runs (``dicom_workers``, 0 = one per usable CPU)."""
        if self.dicom_workers:
            return self.dicom_workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    def peer(self, ae_title: str) -> DicomPeer | None:
        stripped = ae_title.strip()
        for peer in self.dicom_peers:
            if peer.ae_title == stripped:
                return peer
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = _config_file_from(init_settings, env_settings, dotenv_settings)
        if config_file is not None:
            if not config_file.is_file():
                raise ValueError(f"TELECONSULT_CONFIG_FILE {str(config_file)!r} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        sources.append(file_secret_settings)
        return tuple(sources)


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def bucket_and_prefix(storage_url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of an ``s3://bucket[/prefix]`` TELECONSULT_STORAGE_URL."""
    parsed = urlsplit(storage_url.strip())
    bucket = parsed.netloc
    prefix = parsed.path.strip("/")
    if (
        parsed.scheme != "s3"
        or not _BUCKET.fullmatch(bucket)
        or ".." in bucket
        or parsed.query
        or parsed.fragment
        or any(part in ("", ".", "..") for part in prefix.split("/") if prefix)
    ):
        raise ValueError(
            f"TELECONSULT_STORAGE_URL {storage_url[:100]!r} must be s3://bucket or s3://bucket/prefix (a "
            "bucket name of 3-63 lower-case letters, digits, dots and hyphens; a prefix of non-empty "
            "path segments)"
        )
    return bucket, prefix


def _config_file_from(*sources: PydanticBaseSettingsSource) -> Path | None:
    for source in sources:
        value: Any = source().get("config_file")
        if value:
            return Path(value)
    return None


def settings_help() -> str:
    """One line per setting, for ``teleconsult --help``."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        default_text = "[]" if isinstance(default, list) else "unset" if default is None else str(default)
        lines.append(f"  {ENV_PREFIX}{name.upper()}  (default: {default_text})")
        lines.append(f"      {field.description or ''}")
    return "\n".join(lines)
