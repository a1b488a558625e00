"""The output stage of signed reports in the HTTP process: made once per app, run by its lifespan.

``report_outputs(app)`` makes the ``ReportOutputs`` of the app on first use
from the report service and the store; ``outputs_lifespan`` subscribes it
to ``report.signed`` on the store's bus and runs its worker thread while
the app runs (the signing request only writes a row and returns). The
key-image thumbnails of the PDF use the WADO-RS renderer, handed in here so
the consult package does not import the API.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from teleconsult.api.consulting import report_service
from teleconsult.api.dicomweb.rendering import RenderOptions, render_frame
from teleconsult.consults.outputs import ReportOutputs

__all__ = ["OutputsDep", "outputs_lifespan", "report_outputs"]

_lock = threading.Lock()
_THUMBNAIL = RenderOptions(media_type="image/jpeg", viewport=(256, 256), quality=85)


def _thumbnail(path: Path) -> bytes:
    return render_frame(path, 0, _THUMBNAIL)


def report_outputs(app: FastAPI) -> ReportOutputs:
    """The app's output stage, made on first use."""
    outputs: ReportOutputs | None = getattr(app.state, "report_outputs", None)
    if outputs is None:
        reports = report_service(app)
        with _lock:
            outputs = getattr(app.state, "report_outputs", None)
            if outputs is None:
                outputs = ReportOutputs(reports, app.state.store, app.state.settings, render=_thumbnail)
                app.state.report_outputs = outputs
    return outputs


async def _outputs(request: Request) -> ReportOutputs:
    return report_outputs(request.app)


OutputsDep = Annotated[ReportOutputs, Depends(_outputs)]


@asynccontextmanager
async def outputs_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Make the outputs of reports signed while the app runs, and of any still owed from before."""
    outputs = report_outputs(app)
    unsubscribe = outputs.subscribe(app.state.store.bus)
    outputs.start()
    try:
        yield
    finally:
        unsubscribe()
        await asyncio.to_thread(outputs.stop)
