// Start page: log in (phone + SMS code) or register (实名信息 + phone code),
// then the real-name steps: 人脸核身 (a live head-turn capture compared with the
// authority's ID photo), then the signing certificate; once ready, 我的二维码
// and the devices logged in.
import { $, act, api, assuranceText, el, initHeader, localTime, loggedOut, nextPath, session } from "./api.js";
import { cameraSupported } from "./camera.js";
import { failureMessage, faceBox, isCameraError } from "./facecheck.js";

const STEPS = ["phone", "face", "certificate"];
const STATUS = {
  phone: "请登录或注册。",
  face: "已登录。下一步：人脸核身。",
  certificate: "人脸核身已通过。下一步：领取数字证书。",
  ready: "实名认证已完成，可以签署文件。",
  frozen: "账户已冻结。",
};

let me = null; // GET /me, as last read
// The step-up proof of the last matched face check here (unlocks one certificate within
// 10 minutes). Only that check's answer carries it: after a reload, the face again.
let proofId = null;

function show(stage) {
  const reached = stage === "ready" ? STEPS.length : STEPS.indexOf(stage);
  document.querySelectorAll("#steps li").forEach((li, i) => {
    li.className = i < reached ? "done" : i === reached ? "current" : "";
  });
  $("#status").textContent = STATUS[stage];
  $("#account").hidden = stage !== "phone";
  $("#face").hidden = stage !== "face";
  $("#certificate").hidden = stage !== "certificate";
  $("#frozen").hidden = stage !== "frozen";
  $("#ready").hidden = stage !== "ready";
  $("#qr").hidden = stage !== "ready";
  $("#devices").hidden = stage !== "ready";
  initHeader(stage !== "phone");
}

async function ready(certificate) {
  const next = nextPath();
  if (next) { location.replace(next); return; }
  show("ready");
  const level = certificate.assurance_level || me?.assurance_level;
  $("#assurance").textContent = `认证等级：${assuranceText(level)}`;
  $("#assurance").dataset.level = level || "";
  $("#certificate-info").textContent = `证书序列号：${certificate.serial}`
    + (certificate.not_after ? `，有效期至 ${localTime(certificate.not_after)}` : "");
  await listDevices();
}

// The face step, with what the account's state means for it.
function showFace(note) {
  show("face");
  const takeover = me?.status === "pending_takeover";
  $("#face-note").hidden = !takeover && !note;
  $("#face-note").textContent = note || (takeover
    ? "该身份证号已被另一账户注册。您的人脸与权威库证件照比对通过后，将收回该身份证号：另一账户会被冻结，其证书吊销、未完成的签署取消。" : "");
  face.show(null, me?.upload_allowed);
  $("#face-start").textContent = "开始人脸核身";
  $("#face-start").hidden = !cameraSupported() && !me?.upload_allowed; // then the page says why
}

// The certificate step: with a matched face check of the last 10 minutes only.
function showCertificate() {
  show("certificate");
  const upgrade = me?.certificate && me.certificate.assurance_level !== me.assurance_level;
  $("#certificate-hint").textContent = upgrade
    ? `人脸核身已通过，认证等级提升为：${assuranceText(me.assurance_level)}。请领取新证书（旧证书将作废）。`
    : "人脸核身已通过。领取您本人的签名证书后即可签署文件。";
}

// Whether anyone is logged in (the session cookie, which this page cannot read)
// and where they stand: GET /me reads it and changes nothing.
async function probe() {
  try {
    me = await api("GET", "/me");
  } catch (error) {
    // not logged in, or the session ended (api.js kept why, for showLogin to say); or
    // the gateway could not tell (offline, a service away), which the login step says
    showLogin(loggedOut(error) ? null : error.message);
    return;
  }
  if (me.next_step === "frozen") show("frozen");
  else if (me.next_step === "ready") await ready(me.certificate);
  else if (me.next_step === "certificate" && proofId) showCertificate();
  else if (me.next_step === "certificate") showFace("领取证书前需要再做一次人脸核身（核身通过后 10 分钟内有效）。");
  else showFace();
}

// Logging in; if a session just ended (logged out elsewhere, expired, frozen), why.
function showLogin(message) {
  show("phone");
  const ended = session.takeEndedReason();
  if (message || ended) $("#status").textContent = message || ended;
}

// -- phone codes ---------------------------------------------------------------

function wireCodeButton(form) {
  const button = form.querySelector("[data-send-code]");
  button.addEventListener("click", () => act(form, async () => {
    const sent = await api("POST", "/phone-codes", { phone: form.elements.phone.value });
    form.dataset.challenge = sent.challenge_id;
    form.querySelector('[data-error-for="code"]').textContent = `验证码已发送至 ${sent.phone_masked}`;
  }, "phone"));
}

async function confirmedChallenge(form) {
  const challenge = form.dataset.challenge;
  if (!challenge) throw Object.assign(new Error("请先获取验证码"), { local: true });
  await api("POST", `/phone-codes/${challenge}/confirm`, { code: form.elements.code.value.trim() });
  return challenge;
}

function onSubmit(form, action, fallback) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(form, async () => {
      try {
        await action();
      } catch (error) {
        if (!error.local) throw error;
        form.querySelector('[data-error-for="code"]').textContent = error.message;
      }
    }, fallback);
  });
}

// -- tabs ------------------------------------------------------------------------

function selectTab(register) {
  $("#tab-login").setAttribute("aria-selected", String(!register));
  $("#tab-register").setAttribute("aria-selected", String(register));
  $("#login-form").hidden = register;
  $("#register-form").hidden = !register;
}

$("#tab-login").addEventListener("click", () => selectTab(false));
$("#tab-register").addEventListener("click", () => selectTab(true));

// -- forms -------------------------------------------------------------------------

const login = $("#login-form");
wireCodeButton(login);
onSubmit(login, async () => {
  const challenge = await confirmedChallenge(login);
  await api("POST", "/sessions", { phone_challenge_id: challenge }); // the answer's cookie is the session
  session.started();
  await probe();
}, "code");

const register = $("#register-form");
wireCodeButton(register);
onSubmit(register, async () => {
  const challenge = await confirmedChallenge(register);
  await api("POST", "/persons", { // the answer's cookie is the session
    name: register.elements.name.value.trim(),
    id_number: register.elements.id_number.value.trim(),
    phone: register.elements.phone.value.trim(),
    phone_challenge_id: challenge,
  });
  session.started();
  await probe();
}, "code");

// -- 人脸核身: a challenge, the person performing it live, the authority's comparison

const faceForm = $("#face-form");
const face = faceBox(faceForm);

// After a try that did not pass: what went wrong, and a new challenge offered.
function faceFailed(text) {
  if (text) faceForm.querySelector('[data-error-for="_form"]').textContent = text;
  face.show(null, me?.upload_allowed); // that challenge is spent
  $("#face-start").textContent = "重新核身";
  $("#face-start").hidden = false;
}

// 开始人脸核身 (or 重新核身): a new challenge to perform; or, where uploads are
// allowed and a file is chosen, that file.
faceForm.addEventListener("submit", (event) => {
  event.preventDefault();
  act(faceForm, async () => {
    if (face.file) {
      await proved(await api("POST", "/me/face", { selfie: await face.selfie() }));
      return;
    }
    const challenge = await api("POST", "/me/liveness");
    face.show(challenge);
    $("#face-start").hidden = cameraSupported() && !challenge.upload_allowed;
  }, "frames");
});

// 开始拍摄: the camera films the person performing the challenge; the frames
// go to the liveness check and the authority's comparison.
face.onCapture(() => act(faceForm, async () => {
  let frames;
  try {
    frames = await face.film();
  } catch (error) {
    if (!isCameraError(error)) throw error;
    faceForm.querySelector('[data-error-for="frames"]').textContent = error.message; // the challenge still holds
    return;
  }
  try {
    await proved(await api("POST", "/me/face", { challenge_id: face.challenge.challenge_id, frames }));
  } catch (error) {
    faceFailed(""); // the challenge is spent (or expired): the next try takes a new one
    throw error;
  }
}, "frames"));

async function proved(result) {
  if (!result.matched) {
    faceFailed(failureMessage(result.reasons));
    return;
  }
  proofId = result.proof_id;
  face.hide();
  me = await api("GET", "/me");
  if (me.next_step === "ready") await ready(me.certificate);
  else showCertificate();
}

const certificate = $("#certificate-form");
certificate.addEventListener("submit", (event) => {
  event.preventDefault();
  act(certificate, async () => {
    try {
      const issued = await api("POST", "/me/certificate", { proof_id: proofId });
      proofId = null;
      me = await api("GET", "/me");
      await ready(issued);
    } catch (error) {
      if (!/^step_up_/.test(error.reason || "")) throw error;
      proofId = null;
      showFace(error.message); // the proof is spent or too old: the face again
    }
  });
});

// -- 登录设备: this person's sessions; end the others

function agent(text) {
  const ua = text || "";
  const browser = [["MicroMessenger", "微信"], ["Edg/", "Edge"], ["Firefox/", "Firefox"], ["Chrome/", "Chrome"],
    ["Safari/", "Safari"]].find(([mark]) => ua.includes(mark));
  const system = [["Android", "Android"], ["iPhone", "iPhone"], ["iPad", "iPad"], ["Windows", "Windows"],
    ["Mac OS", "macOS"], ["Linux", "Linux"]].find(([mark]) => ua.includes(mark));
  return [browser?.[1] || (ua ? "浏览器" : "未知设备"), system ? `（${system[1]}）` : ""].join("");
}

async function listDevices() {
  const devices = $("#devices");
  const sessions = await act(devices, () => api("GET", "/me/sessions"));
  if (!sessions) return;
  const latest = (s) => s.last_used_at || s.created_at;
  sessions.sort((x, y) => (y.current - x.current) || latest(y).localeCompare(latest(x))); // this one first
  $("#device-list").replaceChildren(...sessions.map((s) => el("li", { class: s.current ? "current" : "", dataset: { session: s.session_id } },
    el("strong", {}, agent(s.user_agent)), s.current ? "（本设备）" : "",
    s.current ? null : el("button", { type: "button", class: "secondary small", onclick: () => revoke(s.session_id) }, "退出"),
    el("small", {}, `登录于 ${localTime(s.created_at)}，最近使用 ${localTime(latest(s))}`))));
  $("#revoke-others").hidden = !sessions.some((s) => !s.current);
}

async function revoke(sessionId) {
  await act($("#devices"), async () => {
    await api("POST", `/me/sessions/${sessionId}/revoke`);
    $("#devices-done").textContent = "已退出该设备。";
  });
  await listDevices();
}

$("#revoke-others").addEventListener("click", async () => {
  await act($("#devices"), async () => {
    const { revoked } = await api("POST", "/me/sessions/revoke-others");
    $("#devices-done").textContent = `已退出其他 ${revoked} 台设备。`;
  });
  await listDevices();
});

// -- 我的二维码: a link (and its QR code) opening a receipt with this person on one side

const qr = $("#qr");
for (const button of qr.querySelectorAll("[data-role]")) {
  button.addEventListener("click", () => act(qr, async () => {
    qr.querySelectorAll("[data-role]").forEach((b) => b.setAttribute("aria-checked", String(b === button)));
    const invite = await api("GET", `/me/receipt-invite?role=${button.dataset.role}`);
    $("#qr-image").src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(invite.qr_svg);
    $("#qr-link").href = invite.url;
    $("#qr-link").textContent = invite.url;
    $("#qr-expiry").textContent = `有效期至 ${localTime(invite.expires_at)}。请只发给要和您开收据的人。`;
    $("#qr-code").hidden = false;
  }));
}

probe();
