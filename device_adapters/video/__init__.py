"""Live video from the township: capture cards as WebRTC tracks, the sender client, captures as DICOM.

``capture.CaptureSource`` opens a capture card (or a video file) once and
hands out one ``MediaRelay`` subscription per peer connection;
``sender.run_sender`` connects it to a live session as the "sender" and
reconnects after a loss (``python -m device_adapters.video``);
``to_dicom.build_video_capture`` is the one builder of the Secondary
Capture a snapshot becomes (the server's ``teleconsult.media.capture``
calls it). The submodules are imported where used: the server needs the
builder, not OpenCV. Protocol and settings: docs/live.md.
"""

from device_adapters.video.to_dicom import build_video_capture

__all__ = ["build_video_capture"]
