// Start page: log in (phone + SMS code) or register (实名信息 + phone code),
// then the real-name steps: face check, then the signing certificate.
import { $, act, api, initHeader, localTime, nextPath, readBase64, session } from "./api.js";

const STEPS = ["phone", "face", "certificate"];
const STATUS = {
  phone: "请登录或注册。",
  face: "已登录。下一步：人脸核验。",
  certificate: "人脸核验已通过。下一步：领取数字证书。",
  ready: "实名认证已完成，可以签署文件。",
};

function show(stage, detail) {
  const reached = stage === "ready" ? STEPS.length : STEPS.indexOf(stage);
  document.querySelectorAll("#steps li").forEach((li, i) => {
    li.className = i < reached ? "done" : i === reached ? "current" : "";
  });
  $("#status").textContent = STATUS[stage];
  $("#account").hidden = stage !== "phone";
  $("#face").hidden = stage !== "face";
  $("#certificate").hidden = stage !== "certificate";
  $("#ready").hidden = stage !== "ready";
  $("#qr").hidden = stage !== "ready";
  if (detail) $("#certificate-info").textContent = detail;
  initHeader();
}

function ready(certificate) {
  const next = nextPath();
  if (next) { location.replace(next); return; }
  show("ready", `证书序列号：${certificate.serial}`);
}

// Where the person stands: GET /me reads it and changes nothing.
async function probe() {
  try {
    const me = await api("GET", "/me");
    if (me.next_step === "ready") { ready(me.certificate); return; }
    show(me.next_step === "certificate" ? "certificate" : "face");
    if (me.next_step === "liveness") {
      $('#face [data-error-for="_form"]').textContent = "本平台还要求活体检测（摇头视频），此网页尚不支持。";
    }
  } catch (error) {
    if (session.token) { show("face"); $('#face [data-error-for="_form"]').textContent = error.message; }
    else show("phone");
  }
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
  session.save(await api("POST", "/sessions", { phone_challenge_id: challenge }));
  await probe();
}, "code");

const register = $("#register-form");
wireCodeButton(register);
onSubmit(register, async () => {
  const challenge = await confirmedChallenge(register);
  const person = await api("POST", "/persons", {
    name: register.elements.name.value.trim(),
    id_number: register.elements.id_number.value.trim(),
    phone: register.elements.phone.value.trim(),
    phone_challenge_id: challenge,
  });
  session.save(person.session);
  show("face");
}, "code");

const face = $("#face-form");
face.addEventListener("submit", (event) => {
  event.preventDefault();
  act(face, async () => {
    const [portrait, selfie] = [face.elements.id_portrait.files[0], face.elements.selfie.files[0]];
    if (!portrait || !selfie) {
      face.querySelector(`[data-error-for="${portrait ? "selfie" : "id_portrait"}"]`).textContent = "请选择照片";
      return;
    }
    const result = await api("POST", "/me/face", { id_portrait: await readBase64(portrait), selfie: await readBase64(selfie) });
    if (result.matched) show("certificate");
    else face.querySelector('[data-error-for="selfie"]').textContent = "自拍与身份证人像不是同一人，请重新拍摄";
  });
});

const certificate = $("#certificate-form");
certificate.addEventListener("submit", (event) => {
  event.preventDefault();
  act(certificate, async () => ready(await api("POST", "/me/certificate")));
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

if (session.token) probe(); else show("phone");
