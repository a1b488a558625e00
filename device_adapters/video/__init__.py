"""Live video from the township: capture cards as WebRTC tracks, the sender client, captures as DICOM.

``capture.CaptureSource`` opens a capture card (or a video file) once and
hands out one ``MediaRelay`` subscription per peer connection;
``sender.run_sender`` connects it to a live session as the "sender" and
reconnects after a loss (``python -m device_adapters.video``);
``to_dicom`` is the one builder module of the DICOM objects live video
becomes: ``build_video_capture`` the Secondary Capture a snapshot becomes,
``build_video_clip`` the multi-frame clips (the server's
``teleconsult.media.capture`` calls both). ``clip.collect_clip`` gathers the
next seconds of a track as JPEG frames (on the server and here), and
``stow.record_clip`` records a clip off the card and stores it in a study
over STOW-RS (``python -m device_adapters.video clip``). The submodules are
imported where used: the server needs the builder, not OpenCV. Protocol and
settings: docs/live.md.
"""

from device_adapters.video.to_dicom import ClipKind, build_video_capture, build_video_clip

__all__ = ["ClipKind", "build_video_capture", "build_video_clip"]
