"""The container log is JSON lines, warnings from libraries included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import logging, warnings
from teleconsult.config import Settings
from teleconsult.log import configure_logging
from pydantic.warnings import UnsupportedFieldAttributeWarning

configure_logging(Settings(log_format={log_format!r}))
logging.getLogger("teleconsult.test").info("stored %s", "张三")
warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
warnings.warn("FastAPI's generated field", UnsupportedFieldAttributeWarning, stacklevel=1)
"""


def _stderr(log_format: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT.format(log_format=log_format)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return [line for line in done.stderr.decode().splitlines() if line.strip()]


def test_json_format_turns_a_warning_into_a_json_line() -> None:
    lines = _stderr("json")
    records = [json.loads(line) for line in lines]  # every line parses
    assert [r["logger"] for r in records] == ["teleconsult.test", "py.warnings"]
    assert records[0]["message"] == "stored 张三"
    assert records[1]["level"] == "WARNING"
    assert "DeprecationWarning: a library's deprecation" in records[1]["message"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_fastapis_unsupported_field_warning_is_not_printed(log_format: str) -> None:
    assert not [line for line in _stderr(log_format) if "generated field" in line]
