"""Reading docker-compose.yml and .env.example as Docker Compose would (no Docker engine here).

``interpolate`` does Compose's variable substitution for the forms the files use
(``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
``${VAR?error}``, ``$VAR``, ``$$``); ``dotenv`` reads ``.env.example`` as Compose
reads ``.env`` (single-quoted values are literal). ``service_environment`` is the
environment a service's container would get.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TLS_OVERRIDE = ROOT / "deploy" / "compose.dicom-tls.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).resolve().parent / "compose-spec.json"

_VARIABLE = re.compile(
    r"\$\$"  # an escaped dollar
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
)


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing: Compose stops with the message."""


def interpolate(text: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = variables.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if missing else str(value)
        if op in ("?", ":?"):
            if missing:
                raise InterpolationError(f"{name}: {arg}")
            return str(value)
        return "" if value is None else value

    return _VARIABLE.sub(replace, text)


def interpolate_all(node: Any, variables: dict[str, str]) -> Any:
    """Every string of a loaded YAML document, interpolated (as Compose does before anything else)."""
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [interpolate_all(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(value, variables) for key, value in node.items()}
    return node


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The file as YAML (merge keys resolved), not interpolated."""
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def dotenv(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    return {key: value or "" for key, value in dotenv_values(path).items()}


def filled_env_example(**overrides: str) -> dict[str, str]:
    """``.env.example`` with every empty secret filled in, as an operator would (hex, 32 bytes)."""
    values = dotenv()
    for key, value in values.items():
        if value == "":
            values[key] = "0123456789abcdef" * 4
    values.update(TURN_HOST="turn.county.example", TURN_EXTERNAL_IP="203.0.113.10")
    values.update(overrides)
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a mapping (Compose accepts a list of NAME=value too)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def teleconsult_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the teleconsult image (built from this repository's Dockerfile)."""
    return {
        name: service
        for name, service in document["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("teleconsult:")
    }


def service_environment(name: str, variables: dict[str, str] | None = None) -> dict[str, str]:
    """The environment Compose gives service ``name``, interpolated with ``variables`` (.env)."""
    document = interpolate_all(load(), filled_env_example() if variables is None else variables)
    return environment(document["services"][name])
