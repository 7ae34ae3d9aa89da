// Camera: getUserMedia video shown as a small preview; at `fps` frames per second the
// current picture is drawn to a canvas and encoded as JPEG for the server.

const WIDTH = 320; // the server shrinks frames to the model's size anyway; keep uploads small
const QUALITY = 0.7;

export class Camera {
  constructor(video, onFrame) {
    this.video = video;
    this.onFrame = onFrame; // (ArrayBuffer JPEG) => void
    this.canvas = document.createElement("canvas");
    this.stream = null;
    this.timer = null;
    this.busy = false;
  }

  get on() {
    return this.stream !== null;
  }

  async start(fps) {
    this.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
    });
    this.video.srcObject = this.stream;
    await this.video.play().catch(() => {}); // muted + playsinline: allowed without a gesture
    this.setFps(fps);
  }

  setFps(fps) {
    clearInterval(this.timer);
    if (this.stream) this.timer = setInterval(() => this._grab(), 1000 / Math.max(1, fps));
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.video.srcObject = null;
  }

  _grab() {
    const v = this.video;
    // Skip when no picture yet, or while the previous frame is still encoding (never queue).
    if (this.busy || !v.videoWidth) return;
    this.busy = true;
    this.canvas.width = WIDTH;
    this.canvas.height = Math.round((WIDTH * v.videoHeight) / v.videoWidth);
    this.canvas.getContext("2d").drawImage(v, 0, 0, this.canvas.width, this.canvas.height);
    this.canvas.toBlob(
      async (blob) => {
        try {
          if (blob && this.stream) this.onFrame(await blob.arrayBuffer());
        } finally {
          this.busy = false;
        }
      },
      "image/jpeg",
      QUALITY,
    );
  }
}
