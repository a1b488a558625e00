"""Absolute URLs of DICOMweb resources (RetrieveURL, BulkDataURI), built from the request's base URL.

The base URL is what the client used to reach us (scheme, host, root path),
so links work behind a reverse proxy that forwards the Host header.
"""

from __future__ import annotations

from fastapi import Request

__all__ = ["PREFIX", "DicomwebURLs"]

PREFIX = "/dicomweb"


class DicomwebURLs:
    """URL builder for one request."""

    def __init__(self, request: Request) -> None:
        self.root = str(request.base_url).rstrip("/") + PREFIX

    def study(self, study: str) -> str:
        return f"{self.root}/studies/{study}"

    def series(self, study: str, series: str) -> str:
        return f"{self.root}/studies/{study}/series/{series}"

    def instance(self, study: str, series: str, instance: str) -> str:
        return f"{self.root}/studies/{study}/series/{series}/instances/{instance}"

    def bulkdata(self, study: str, series: str, instance: str, path: str) -> str:
        return f"{self.instance(study, series, instance)}/bulkdata/{path}"
