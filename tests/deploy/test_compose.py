"""docker-compose.yml, .env.example and the Dockerfile, checked without a Docker engine.

- the compose files validate against the Compose Specification's JSON schema (vendored:
  tests/deploy/README.md), with check-jsonschema, offline;
- every TELECONSULT_* variable they name is a setting of teleconsult, and each teleconsult
  service's environment makes valid Settings;
- every command run with the teleconsult image, and every `teleconsult ...` command
  docs/deployment.md tells an operator to run, parses with teleconsult's own CLI parser;
- images are pinned, the image runs as a user that is not root, health checks and start order
  hold together, and migrations run once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from teleconsult.cli import _parser
from teleconsult.config import ENV_PREFIX, Settings
from tests.deploy.compose import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    ROOT,
    SCHEMA,
    TLS_OVERRIDE,
    InterpolationError,
    dotenv,
    environment,
    filled_env_example,
    interpolate,
    interpolate_all,
    load,
    teleconsult_services,
)

SETTINGS = frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields)
_NAME = re.compile(r"\bTELECONSULT_[A-Z0-9_]+\b")


# -- the Compose Specification ----------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_FILE, TLS_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_are_valid_compose_specification(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--no-cache", "--schemafile", str(SCHEMA), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_service_outside_the_schema_is_caught(tmp_path: Path) -> None:
    """The check can fail: a misspelt key is refused (so the test above is not vacuous)."""
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  web:\n    image: nginx:1.27\n    restart_policy: always\n")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--no-cache", "--schemafile", str(SCHEMA), str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "restart_policy" in result.stdout + result.stderr


# -- variables and settings -------------------------------------------------------------------


def _names_in(path: Path) -> set[str]:
    return set(_NAME.findall(path.read_text(encoding="utf-8")))


def test_every_teleconsult_variable_is_a_setting() -> None:
    named = {path.name: _names_in(path) for path in (COMPOSE_FILE, TLS_OVERRIDE, ENV_EXAMPLE)}
    for file, names in named.items():
        unknown = names - SETTINGS
        assert not unknown, f"{file} names {sorted(unknown)}, which are not settings of teleconsult"
    assert named["docker-compose.yml"] >= {
        "TELECONSULT_DATABASE_URL",
        "TELECONSULT_BROKER_URL",
        "TELECONSULT_MQTT_URL",
        "TELECONSULT_TURN_SECRET",
        "TELECONSULT_LOG_FORMAT",
    }
    assert set(dotenv()) & SETTINGS, ".env.example sets teleconsult settings"


def test_both_roles_keep_dicom_files_in_the_bucket_minio_init_makes() -> None:
    document = interpolate_all(load(), filled_env_example(S3_BUCKET="county-dicom"))
    services = document["services"]
    init = services["minio-init"]
    assert environment(init)["S3_BUCKET"] == "county-dicom"
    assert 'mc mb --ignore-existing "local/$${S3_BUCKET}"'.replace("$$", "$") in init["command"][0]
    for role in ("teleconsult", "gateway"):
        env = environment(services[role])
        assert env["TELECONSULT_STORAGE_URL"] == "s3://county-dicom"
        assert env["TELECONSULT_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] == environment(init)["S3_ACCESS_KEY_ID"]
        assert env["AWS_SECRET_ACCESS_KEY"] == environment(init)["S3_SECRET_ACCESS_KEY"]
        assert services[role]["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}


def test_each_teleconsult_service_environment_makes_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    document = interpolate_all(load(), filled_env_example())
    services = teleconsult_services(document)
    assert set(services) == {"migrate", "teleconsult", "gateway"}
    for name, service in services.items():
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            monkeypatch.delenv(key)
        for key, value in environment(service).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.database_url is not None, name
        assert settings.database_url.startswith("postgresql://teleconsult:"), name
        assert settings.broker_url == "redis://redis:6379/0", name
        assert settings.log_format == "json", name
        assert not settings.database_auto_migrate, f"{name} must leave migrations to the migrate service"
        if name != "migrate":
            assert settings.storage_url == "s3://teleconsult"
            assert settings.s3_endpoint_url == "http://minio:9000"
        if name == "teleconsult":
            assert settings.mqtt_url is not None
            assert settings.mqtt_url.endswith("@mosquitto:1883")
            assert settings.ecg_inbox_poll_seconds == 0, "the ECG drop folder is the gateway's"
            assert settings.turn_urls[0] == "turn:turn.county.example:3478?transport=udp"
            assert settings.turn_for_server
            assert settings.http_host == "0.0.0.0"
        if name == "gateway":
            assert settings.mqtt_url is None, "one kiosk subscriber per broker: the HTTP role's"
            assert settings.ecg_inbox_dir == Path("/srv/ecg-inbox")
            assert settings.dicom_host == "0.0.0.0"
            assert [p.ae_title for p in settings.dicom_peers if p.pacs] == ["COUNTYPACS"]
            assert settings.dicom_forward_rules[0].destination == "COUNTYPACS"


def test_compose_stops_when_a_secret_is_not_filled_in() -> None:
    with pytest.raises(InterpolationError, match="TURN_SECRET"):
        interpolate_all(load(), filled_env_example(TURN_SECRET=""))
    assert interpolate("a$$b ${X:-d} ${Y-e} ${Z}", {"Y": ""}) == "a$b d  "


def test_coturn_and_teleconsult_share_the_turn_secret() -> None:
    document = interpolate_all(load(), filled_env_example(TURN_SECRET="s" * 40))
    coturn = document["services"]["coturn"]
    assert f"--static-auth-secret={'s' * 40}" in coturn["command"]
    assert "--use-auth-secret" in coturn["command"]
    assert environment(document["services"]["teleconsult"])["TELECONSULT_TURN_SECRET"] == "s" * 40
    assert coturn["network_mode"] == "host"


# -- commands -----------------------------------------------------------------------------------


def _parse(argv: list[str]) -> Any:
    assert argv[0] == "teleconsult", argv
    return _parser().parse_args(argv[1:])


def test_every_command_of_the_teleconsult_image_parses() -> None:
    document = load()
    parsed = {name: _parse(service["command"]) for name, service in teleconsult_services(document).items()}
    assert (parsed["migrate"].command, parsed["migrate"].db_command) == ("db", "upgrade")
    assert (parsed["teleconsult"].command, parsed["teleconsult"].no_dicom) == ("serve", True)
    assert not parsed["teleconsult"].no_http
    assert (parsed["gateway"].command, parsed["gateway"].no_http) == ("serve", True)
    assert not parsed["gateway"].no_dicom
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert cmd is not None
    assert _parse(json.loads(cmd.group(1))).command == "serve"


def test_the_operator_commands_in_the_deployment_guide_parse() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    lines = [
        line.split("#", 1)[0].strip()
        for line in guide.replace("\\\n", " ").splitlines()
        if re.search(r"docker compose (exec|run --rm) \S+ teleconsult ", line)
    ]
    assert len(lines) >= 5, "the guide shows the first admin, backups and migrations"
    for line in lines:
        words = shlex.split(line)
        at = words.index("compose") + 2  # past exec / run
        while words[at].startswith("-"):
            at += 1
        assert words[at] in ("teleconsult", "gateway", "migrate"), line
        _parse(words[at + 1 :])


# -- images, users, health checks, order ------------------------------------------------------


def _dockerfile_stages() -> list[tuple[str, list[str]]]:
    """(base image, instructions) of each stage, ARG defaults substituted."""
    args: dict[str, str] = {}
    stages: list[tuple[str, list[str]]] = []
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "ARG" and not stages and "=" in rest:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            image = interpolate(rest.split()[0], args)
            stages.append((image, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def _pinned(image: str) -> bool:
    """A tag other than latest (a registry's port is no tag), or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def test_the_dockerfile_is_multi_stage_pinned_and_runs_as_a_user() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    for image, _ in stages:
        assert _pinned(image), f"base image {image!r} must be pinned to a tag other than latest"
        assert image.startswith("python:3.11"), "pyproject.toml requires Python 3.11"
    runtime = stages[-1][1]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any("COPY --from=build" in line for line in runtime)
    installs = " ".join(line for line in runtime if "apt-get install" in line)
    for package in ("fonts-wqy-microhei", "postgresql-client-15"):
        assert package in installs, f"the runtime image needs {package}"
    assert "build-essential" not in installs


def test_compose_images_are_pinned() -> None:
    document = load()
    for name, service in document["services"].items():
        image = interpolate(service["image"], {}) if "image" in service else ""
        assert image, f"{name} names its image"
        assert _pinned(image), f"{name}: image {image!r} must be pinned to a tag other than latest"
    postgres_major = document["services"]["postgres"]["image"].split(":")[1].split("-")[0].split(".")[0]
    runtime = " ".join(_dockerfile_stages()[-1][1])
    assert f"postgresql-client-{postgres_major}" in runtime, "pg_dump must match the server's major version"


def test_health_checks_and_start_order_hold_together() -> None:
    document = load()
    services = document["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} needs a health check"
            if rule["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is a one-shot"
        check = service.get("healthcheck", {}).get("test")
        if check and check[:3] == ["CMD", "python", "-c"]:
            compile(check[3], f"{name} health check", "exec")
    for role in ("teleconsult", "gateway"):
        assert services[role]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[role]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "/readyz" in services["teleconsult"]["healthcheck"]["test"][3]
    volumes = set(document["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source.startswith("./") or source in volumes, f"{name}: {source} is not a named volume"
