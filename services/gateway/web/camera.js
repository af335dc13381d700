// The live selfie of the liveness check: open the front camera, show the person
// a mirrored preview, count down, capture a few JPEG frames while they perform
// the head-turn challenge the server issued, and close the camera again. The
// frames (base64, no data: prefix) go to the API as they are; the server
// judges them (services/identity/liveness.py wants 3-20 frames, unmirrored).
// No dependencies and no inline code: the pages run under script-src 'self'.

export const ACTION_LABELS = Object.freeze({ turn_left: "向左转头", turn_right: "向右转头" });

const CAMERA_ERRORS = {
  camera_denied: "无法使用摄像头：请在浏览器设置中允许本网站使用摄像头，然后重试",
  camera_unavailable: "摄像头不可用：请确认设备有前置摄像头且未被其他应用占用，或换用手机浏览器",
};

// getUserMedia's DOMException names that mean the person or the browser said no.
const DENIED = new Set(["NotAllowedError", "PermissionDeniedError", "SecurityError"]);

// How long the camera may take to show its first picture.
const FIRST_FRAME_TIMEOUT_MS = 10000;

// "请先向右转头，再向左转头" (two turns), "…，最后向右转头" (three).
export function describeChallenge(actions) {
  const labels = actions.map((action) => ACTION_LABELS[action] || action);
  if (labels.length <= 1) return `请${labels[0] || ""}`;
  return labels.map((label, i) => {
    if (i === 0) return `请先${label}`;
    return (i === labels.length - 1 && labels.length > 2 ? "最后" : "再") + label;
  }).join("，");
}

// http://127.0.0.1 and http://localhost are secure contexts too; any other
// plain-http origin is not, and browsers hide the camera there.
export function cameraSupported() {
  return Boolean(globalThis.isSecureContext && navigator.mediaDevices?.getUserMedia);
}

function cameraError(code, cause) {
  const error = new Error(CAMERA_ERRORS[code]);
  error.code = code;
  if (cause) error.cause = cause;
  return error;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, Math.max(0, ms)); });

// Resolves when the video shows its first picture of the stream.
function firstFrame(video) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(cameraError("camera_unavailable")), FIRST_FRAME_TIMEOUT_MS);
    const done = () => { clearTimeout(timer); resolve(); };
    if (typeof video.requestVideoFrameCallback === "function") video.requestVideoFrameCallback(done);
    else if (video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA) done();
    else video.addEventListener("loadeddata", done, { once: true });
  });
}

function blobBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// One picture of what the camera shows now, as the camera sees it (not
// mirrored: the CSS mirror is for the preview only), longer side <= maxSide.
function snapshot(video, maxSide, quality) {
  const width = video.videoWidth;
  const height = video.videoHeight;
  if (!width || !height) throw cameraError("camera_unavailable");
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(cameraError("camera_unavailable"))), "image/jpeg", quality);
  });
}

// Films the person performing the challenge: `frames` JPEGs evenly over
// `durationMs` (the first when the countdown ends, the last `durationMs` later)
// after a countdown of `countdownMs` from the camera's first picture.
// onProgress gets {phase: "countdown", secondsLeft} then {phase: "capturing",
// captured, total}. Returns the frames as base64 strings; the camera is always
// closed before this returns or throws. Errors carry .code "camera_denied" or
// "camera_unavailable" (their message is Chinese, ready to show).
export async function captureChallenge(video, {
  countdownMs = 1500, durationMs = 3500, frames = 14, maxSide = 640, quality = 0.85, onProgress = () => {},
} = {}) {
  if (!(frames >= 1 && durationMs >= 0 && countdownMs >= 0)) throw new RangeError("captureChallenge: bad options");
  if (!cameraSupported()) throw cameraError("camera_unavailable");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
    });
  } catch (error) {
    throw cameraError(DENIED.has(error?.name) ? "camera_denied" : "camera_unavailable", error);
  }
  let ended = false;
  const [track] = stream.getVideoTracks();
  track?.addEventListener("ended", () => { ended = true; });
  const check = () => { if (ended) throw cameraError("camera_unavailable"); };
  try {
    video.muted = true;
    video.playsInline = true;
    video.setAttribute("playsinline", "");
    video.style.transform = "scaleX(-1)";
    video.srcObject = stream;
    // a muted video may always play; should play() still refuse, the first-frame wait times out
    Promise.resolve(video.play()).catch(() => {});
    await firstFrame(video);

    const countdownEnd = performance.now() + countdownMs;
    let shown = null;
    for (let left = countdownMs; left > 0; left = countdownEnd - performance.now()) {
      check();
      const secondsLeft = Math.ceil(left / 1000);
      if (secondsLeft !== shown) onProgress({ phase: "countdown", secondsLeft });
      shown = secondsLeft;
      await sleep(left - (secondsLeft - 1) * 1000); // to the next whole second
    }

    // deadlines from one start, so a slow frame does not push the later ones
    const start = performance.now();
    const step = frames > 1 ? durationMs / (frames - 1) : 0;
    const blobs = [];
    for (let k = 0; k < frames; k += 1) {
      await sleep(start + k * step - performance.now());
      check();
      const shot = snapshot(video, maxSide, quality);
      shot.catch(() => {}); // handled below, by Promise.all
      blobs.push(shot);
      onProgress({ phase: "capturing", captured: k + 1, total: frames });
    }
    return await Promise.all((await Promise.all(blobs)).map(blobBase64));
  } finally {
    for (const each of stream.getTracks()) each.stop();
    video.srcObject = null;
  }
}
