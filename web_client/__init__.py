"""The browser app for county specialists and township doctors, served by teleconsult at ``/``.

Plain HTML, CSS and JavaScript ES modules under ``static/`` (no build step,
nothing fetched from elsewhere at run time); ``teleconsult.api.web_client``
mounts ``STATIC_DIR`` after every API route. See ``README.md`` here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
