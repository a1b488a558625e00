"""Shared fixtures: clean environment, index backends, store, gateway on loopback."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, settings
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine, create_engine, text

from dicom_gateway.ae import start_gateway
from teleconsult.config import Settings
from teleconsult.events import Event, EventBus
from teleconsult.storage.index import normalise_database_url
from teleconsult.storage.store import InstanceStore

# Fixtures of real peers, shared by several test modules.
pytest_plugins = ["tests.orthanc"]

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TEST_DATABASE_URL = os.environ.get("TELECONSULT_TEST_DATABASE_URL")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never see the developer's TELECONSULT_* settings or a .env file."""
    for name in list(os.environ):
        if name.startswith("TELECONSULT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def require_tool(name: str) -> str:
    """The path of a real peer's binary; in CI a missing one is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: the test set-up must install it")
        pytest.skip(f"{name} is not installed")
    return path


@contextmanager
def database_for(kind: str, folder: Path) -> Iterator[str]:
    """An index URL: embedded SQLite in ``folder``, or PostgreSQL in a fresh schema (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'index.sqlite3'}"
        return
    if not TEST_DATABASE_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set TELECONSULT_TEST_DATABASE_URL")
        pytest.skip("TELECONSULT_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_database_url(TEST_DATABASE_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    try:
        yield f"{TEST_DATABASE_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The index URL: embedded SQLite, and PostgreSQL in a fresh schema when configured."""
    with database_for(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    def _make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "dicom_acse_timeout": 5,
            "dicom_dimse_timeout": 10,
            "dicom_network_timeout": 10,
            "dicom_peers": [
                {"ae_title": "TOWNUS", "host": "127.0.0.1", "port": 104, "organisation": "TOWN01"},
                {"ae_title": "STORESCU", "host": "127.0.0.1", "port": 104, "organisation": "TOWN02"},
                {"ae_title": "ECHOSCU", "host": "127.0.0.1", "port": 104, "organisation": "TOWN02"},
            ],
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return _make


@pytest.fixture
def app_settings(make_settings) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings()  # type: ignore[no-any-return]


class RecordingBus(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.subscribe(self.events.append)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def store(app_settings: Settings, bus: RecordingBus) -> Iterator[InstanceStore]:
    instance_store = InstanceStore(app_settings, bus)
    instance_store.open()
    try:
        yield instance_store
    finally:
        instance_store.close()


@dataclass
class RunningGateway:
    settings: Settings
    store: InstanceStore
    server: ThreadedAssociationServer

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture
def start(make_settings, bus: EventBus) -> Iterator[Callable[..., RunningGateway]]:  # type: ignore[no-untyped-def]
    started: list[RunningGateway] = []

    def _start(port: int = 0, **overrides: object) -> RunningGateway:
        settings = make_settings(**overrides)
        store = InstanceStore(settings, bus)
        store.open()
        server = start_gateway(settings, store, host="127.0.0.1", port=port)
        running = RunningGateway(settings, store, server)
        started.append(running)
        return running

    yield _start
    for running in started:
        running.server.shutdown()
        running.store.close()


@pytest.fixture
def gateway(start: Callable[..., RunningGateway]) -> RunningGateway:
    return start()


# -- the HTTP API with a small community: COUNTY > TOWN01, TOWN02 > VILLAGE21 --

COMMUNITY = [
    ("COUNTY", "County Hospital", None),
    ("TOWN01", "Township 1", "COUNTY"),
    ("TOWN02", "Township 2", "COUNTY"),
    ("VILLAGE21", "Village 21", "TOWN02"),
]
PASSWORD = "correct-horse-battery"
USERS = {
    "specialist": ("specialist", "COUNTY"),
    "admin": ("admin", "COUNTY"),
    "sono1": ("sonographer", "TOWN01"),
    "doctor1": ("township_doctor", "TOWN01"),
    "sono2": ("sonographer", "TOWN02"),
    "village": ("township_doctor", "VILLAGE21"),
}


@dataclass
class ApiClient:
    """A TestClient on a fresh app, and bearer headers for each test user."""

    client: object
    store: InstanceStore
    settings: Settings

    def token(self, username: str) -> str:
        response = self.client.post(  # type: ignore[attr-defined]
            "/api/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}


@pytest.fixture
def api(app_settings: Settings, store: InstanceStore) -> Iterator[ApiClient]:
    from fastapi.testclient import TestClient

    from teleconsult.api.app import create_app
    from teleconsult.storage.identity import IdentityStore

    identity = IdentityStore(store.index.engine)
    for code, name, parent in COMMUNITY:
        identity.add_organisation(code, name, parent)
    for username, (role, organisation) in USERS.items():
        identity.add_user(username, PASSWORD, role, organisation)
    with TestClient(create_app(app_settings, store)) as client:
        yield ApiClient(client=client, store=store, settings=app_settings)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A bare engine on the test database, no schema: what the migration tests start from."""
    engine = create_engine(normalise_database_url(database_url))
    try:
        yield engine
    finally:
        engine.dispose()


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_stream() -> Iterator[str]:
    """A stream name of this test's own on the machine's Redis, deleted afterwards (CI: Redis must run)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail("Redis must run on 127.0.0.1:6379 for the tests of events between replicas")
        pytest.skip("no Redis on 127.0.0.1:6379")
    name = f"teleconsult.test.{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        client.delete(name)
        client.close()
