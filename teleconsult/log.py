"""configure_logging(): called by entry points only; packages add a NullHandler."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import UTC, datetime

from pydantic.warnings import UnsupportedFieldAttributeWarning

from teleconsult.config import Settings

__all__ = ["configure_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # A library's warning is a log record like any other: printed raw, it would
    # be the one line of a container's log that is not JSON.
    logging.captureWarnings(True)
    # FastAPI builds its validators inside warnings.catch_warnings() to hide
    # this one, but that context swaps the process-wide filter list, so a
    # thread entering or leaving another catch_warnings() at the same moment
    # lets it through. It is about FastAPI's own generated fields, never ours.
    warnings.filterwarnings("ignore", category=UnsupportedFieldAttributeWarning)
    # pynetdicom logs every PDU at INFO and may print identifiers: quiet by
    # default, as its own apps do, unless identifier logging is switched on.
    logging.getLogger("pynetdicom").setLevel(
        logging.DEBUG if settings.log_dicom_identifiers else logging.WARNING
    )
