// This participant's own camera (the sender's capture source) and microphone.
// The sonographer's capture card shows up as a camera; the specialist only needs a microphone,
// and can still watch and chat without one.

// Enough for an ultrasound screen without flooding a township uplink; the server re-encodes.
const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 25 } };

export class LocalMedia {
  constructor() {
    this.video = null; // MediaStreamTrack
    this.audio = null;
    this.muted = false;
  }

  /** Camera and microphone for the sender; without a microphone, the camera alone. */
  async openSender(deviceId = "") {
    const video = deviceId ? { ...VIDEO, deviceId: { exact: deviceId } } : VIDEO;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video, audio: true });
    } catch (error) {
      if (error?.name !== "NotFoundError" && error?.name !== "OverconstrainedError") throw error;
      stream = await navigator.mediaDevices.getUserMedia({ video });
    }
    this.video = stream.getVideoTracks()[0] ?? null;
    this.audio = stream.getAudioTracks()[0] ?? null;
    this.applyMute();
  }

  /** The microphone of a viewer; false when there is none (or it is refused): watch and chat only. */
  async openViewer() {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      this.audio = stream.getAudioTracks()[0] ?? null;
    } catch {
      this.audio = null;
    }
    this.applyMute();
    return this.audio !== null;
  }

  /** Cameras (and capture cards) the browser offers, labelled once permission is granted. */
  async cameras() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((device) => device.kind === "videoinput");
  }

  currentCameraId() {
    return this.video?.getSettings().deviceId ?? "";
  }

  /** Open another camera; returns its track (the caller swaps it into the peer connection). */
  async switchCamera(deviceId) {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { ...VIDEO, deviceId: { exact: deviceId } } });
    const previous = this.video;
    this.video = stream.getVideoTracks()[0];
    previous?.stop();
    return this.video;
  }

  /** A stream of the local camera for the self view (no audio: nobody wants to hear themselves). */
  preview() {
    return this.video ? new MediaStream([this.video]) : null;
  }

  setMuted(muted) {
    this.muted = muted;
    this.applyMute();
  }

  applyMute() {
    if (this.audio) this.audio.enabled = !this.muted;
  }

  stop() {
    this.video?.stop();
    this.audio?.stop();
    this.video = null;
    this.audio = null;
  }
}
