// The live face check as the pages show it (camera.html): the head turns the
// server asked for in words, a "开始拍摄" button, the camera preview with its
// countdown and progress, and what a failed check means, in Chinese. Used by
// the start page (人脸核身) and the flow page (人脸意愿认证); camera.js films.
import { cameraSupported, captureChallenge, describeChallenge } from "./camera.js";
import { readBase64 } from "./api.js";

// services/identity/liveness.py's reasons (and the proof's face_mismatch*).
const REASONS = {
  static_frames: "未检测到转头动作，请按提示转头（不能用照片或屏幕代替本人）",
  no_motion: "未检测到转头动作，请按提示转头",
  challenge_not_performed: "转头方向与提示不符，请按提示的顺序转头",
  identity_changed: "拍摄过程中人脸发生了变化，请本人独自完成",
  mirrored_frames: "画面异常（镜像），请换用浏览器自带的前置摄像头",
  no_face: "未检测到人脸，请正对摄像头，保持光线充足",
  multiple_faces: "画面中有多张人脸，请本人独自完成",
  face_too_small: "人脸太小，请靠近摄像头",
  face_mismatch: "人脸比对未通过：与权威库证件照不是同一人",
  face_mismatch_registered: "人脸比对未通过：与您已核验的人脸不是同一人",
};

// One sentence per distinct meaning: static_frames and no_motion say the same.
export function failureMessage(reasons) {
  const said = [];
  for (const reason of reasons || []) {
    const text = REASONS[reason] || `核验未通过（${reason}）`;
    if (reason === "no_motion" && reasons.includes("static_frames")) continue;
    if (!said.includes(text)) said.push(text);
  }
  return said.length ? said.join("；") : "核验未通过，请重试";
}

// The camera fragment of a form: show a challenge, film it, or take a file
// where the platform allows uploads.
export function faceBox(root) {
  const box = root.querySelector("[data-camera]");
  const video = box.querySelector("video");
  const instruction = box.querySelector("[data-instruction]");
  const progress = box.querySelector("[data-progress]");
  const capture = box.querySelector("[data-capture]");
  const upload = root.querySelector("[data-upload]");
  const noCamera = root.querySelector("[data-no-camera]");
  let challenge = null;

  const say = (text) => { progress.textContent = text; };

  return {
    get challenge() { return challenge; },
    get file() { return upload.hidden ? null : upload.querySelector("input").files[0] || null; },
    onCapture(handler) { capture.addEventListener("click", handler); },

    // Where a camera can film: the challenge in words and the button to start.
    // Uploads (only where allowed) also when there is no camera.
    show(next, uploadAllowed = next?.upload_allowed) {
      challenge = next;
      const camera = cameraSupported();
      upload.hidden = !uploadAllowed;
      noCamera.hidden = camera;
      noCamera.textContent = uploadAllowed
        ? "此浏览器无法使用摄像头（需 HTTPS 和摄像头权限），请上传一张本人正面自拍。"
        : "本平台要求用摄像头现场核验，此浏览器无法使用摄像头：请用带前置摄像头的手机或电脑浏览器打开本页（需 HTTPS），并允许使用摄像头。";
      box.hidden = !camera || !challenge;
      if (!challenge) { delete instruction.dataset.actions; delete instruction.dataset.challenge; }
      if (box.hidden) return;
      instruction.textContent = describeChallenge(challenge.actions);
      instruction.dataset.actions = challenge.actions.join(",");
      instruction.dataset.challenge = challenge.challenge_id;
      video.hidden = true;
      capture.hidden = false;
      say("准备好后点击“开始拍摄”：正对摄像头，倒计时结束后按上面的提示转头。");
    },

    hide() {
      challenge = null;
      box.hidden = true;
      upload.hidden = true;
      noCamera.hidden = true;
      delete instruction.dataset.actions;
      delete instruction.dataset.challenge;
    },

    // The frames of the person performing the challenge (base64 JPEGs).
    async film() {
      capture.hidden = true;
      video.hidden = false;
      const wanted = Math.min(Math.max(14, challenge.frames_min || 3), challenge.frames_max || 20);
      try {
        const frames = await captureChallenge(video, {
          frames: wanted,
          onProgress: (step) => say(step.phase === "countdown" ? `${step.secondsLeft} 秒后开始，请正对摄像头`
            : `拍摄中，请${describeChallenge(challenge.actions).slice(1)}（${step.captured}/${step.total}）`),
        });
        say("拍摄完成，正在核验……");
        return frames;
      } catch (error) {
        capture.hidden = false;
        say("");
        throw error;
      } finally {
        video.hidden = true;
      }
    },

    async selfie() { return readBase64(this.file); },
  };
}

// A camera error (camera.js: .code camera_denied / camera_unavailable) has a Chinese message.
export function isCameraError(error) { return /^camera_/.test(error?.code || ""); }
