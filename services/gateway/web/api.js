// The pages' one shared module: the /api/v1 client, who is logged in, and
// showing an API error next to the field it names.
//
// The session is a cookie the gateway sets at login and registration: HttpOnly,
// so no script here reads it (nor one injected into a page), and shared by every
// tab of the browser. The pages send it with each request (fetch's default,
// same-origin credentials) and learn who is logged in from GET /me.

const ENDED_REASON = "esign.ended"; // why the last session ended, for the login page to say (this tab's)

export const session = {
  // A session began (login, registration): why the last one ended is old news.
  started() { sessionStorage.removeItem(ENDED_REASON); },
  // Why the last session ended (said once), or null.
  takeEndedReason() {
    const reason = sessionStorage.getItem(ENDED_REASON);
    sessionStorage.removeItem(ENDED_REASON);
    return reason;
  },
};

// Reasons of 403/409/429 answers, said in Chinese: every reason services/common/reasons.py lists, in
// its order, and no other (tests/unit/test_gateway_web.py holds the two lists equal).
const REASONS = {
  // sessions and accounts
  session_required: "请先登录",
  session_invalid: "登录已失效，请重新登录",
  session_revoked: "您已退出登录（或已在其他设备上被退出），请重新登录",
  session_expired: "登录已过期，请重新登录",
  csrf_origin: "请求来源不被允许，请从本站页面操作",
  account_frozen: "账户已冻结：该身份证号已由本人通过人脸核身认领。如有疑问请联系客服",
  account_pending: "账户待确认：该身份证号已被另一账户使用，请先完成人脸核身",
  // phone codes
  otp_wrong_code: "验证码错误",
  otp_expired: "验证码已过期，请重新获取",
  otp_locked: "错误次数过多，请稍后再试",
  otp_already_used: "验证码已使用，请重新获取",
  otp_resend_too_soon: "发送太频繁，请稍后再试",
  otp_send_limit: "发送次数已达上限",
  otp_not_deliverable: "验证码已发送或已过期",
  phone_not_confirmed: "请先验证手机号",
  phone_confirmation_expired: "手机验证已过期，请重新获取验证码",
  phone_challenge_used: "该验证码已用过，请重新获取",
  // registration
  phone_registered: "该手机号已注册，请直接登录",
  id_number_registered: "该身份证号已注册",
  registration_conflict: "注册未完成，请重试",
  // face checks and step-up
  face_not_verified: "请先完成人脸核身",
  face_proofing_locked: "人脸核身失败次数过多，已暂时锁定，请稍后再试",
  face_willingness_locked: "人脸认证失败次数过多，已暂时锁定，可改用短信验证码",
  liveness_challenge_used: "本次转头指令已使用，请重新开始",
  liveness_challenge_expired: "转头指令已过期，请重新开始",
  liveness_failed: "活体检测未通过：请正对摄像头，按提示转头",
  face_mismatch: "人脸比对未通过：与您实名认证时的人脸不是同一人",
  step_up_required: "此操作需要先完成人脸核身",
  step_up_level_too_low: "本次核身的认证等级不够，请用摄像头重新进行人脸核身",
  step_up_expired: "人脸核身已超过 10 分钟，请重新核身",
  step_up_used: "本次人脸核身已使用过，请重新核身",
  // certificates, willingness, signing grants
  no_active_certificate: "请先领取数字证书",
  certificate_not_valid: "证书无效，请重新领取",
  certificate_revoked: "证书已吊销，请重新人脸核身并领取证书",
  certificate_changed: "证书已更换，请重新发起",
  assurance_too_low: "您的证书认证等级低于本文件的要求：请回到首页重新人脸核身，领取新证书后再签署",
  willingness_used: "意愿认证已使用，请重新签署",
  willingness_failed: "意愿认证未通过，请重新发起",
  willingness_expired: "意愿认证已过期，请重新发起",
  grant_unknown: "签署授权无效，请重新进行意愿认证",
  grant_foreign_person: "签署授权不属于您，请重新进行意愿认证",
  grant_certificate_mismatch: "签署授权与您当前的证书不符，请重新进行意愿认证",
  grant_replayed: "签署授权已使用，请重新进行意愿认证",
  grant_expired: "签署授权已过期，请重新进行意愿认证",
  grant_digest_mismatch: "签署授权与本文件不符，请重新进行意愿认证",
  // flows: the state a flow is in
  flow_draft: "文件尚未发起签署",
  flow_waiting: "文件正在签署中",
  flow_completed: "文件已签署完成",
  flow_declined: "文件已被拒签",
  flow_expired: "文件已过期",
  flow_void_requested: "文件正在申请作废",
  flow_voided: "文件已作废",
  flow_cancelled: "文件已取消",
  // flows: who may do what
  flow_not_expired: "文件尚未过期",
  not_a_party: "您不是该文件的签署方",
  already_a_party: "您已是该文件的签署方",
  party_taken: "该签署方已由他人认领",
  not_your_turn: "还没轮到您签署",
  your_turn: "现在轮到您自己签署",
  already_signed: "您已签署",
  reminded_today: "今天已催签过，请明天再试",
  void_requester_cannot_confirm: "作废申请人不能自己确认",
  void_already_confirmed: "您已确认作废",
  not_your_action: "这不是您的操作，请刷新页面",
  pending_action_used: "该操作已完成，请刷新页面",
  pending_action_expired: "操作已超时，请重新开始",
  document_changed_since_prepare: "文件在签署过程中有变动，请刷新页面后重新签署",
  // signatures in the PDF
  field_not_signable: "文件的签名位置无法签署",
  field_already_signed: "该签名位置已有签名",
  certification_not_first: "认证签名须是文件的第一个签名",
  no_signatures: "文件中没有签名",
  // IOUs
  not_a_loan: "这不是借条，不能记录还款或展期",
  identity_disputed: "签署方身份存在争议，不能再记录还款或展期",
  statement_pending: "另一份还款确认书或展期协议正在签署中，请等它签完",
  loan_repaid: "借款已还清",
  lender_only: "只有出借人可以确认收到还款",
  // documents and invites
  document_in_flow: "文件已发起签署，不能再修改",
  document_changed: "文件已修改，请重新发起",
  document_locked: "文件已发起签署，不能再修改",
  invite_invalid: "二维码无效，请让对方重新生成",
  invite_expired: "二维码已过期，请让对方重新生成",
  // signed tokens
  token_malformed: "链接无效",
  token_bad_signature: "链接无效",
  token_expired: "链接已过期",
  // notify
  dedupe_key_reused: "短信请求重复",
  // the gateway's rate limits
  too_many_requests_phone_codes: "获取验证码太频繁，请稍后再试",
  too_many_requests_verify: "验证文件太频繁，请稍后再试",
  too_many_requests_document_status: "查询文件状态太频繁，请稍后再试",
  too_many_requests_tsa: "时间戳请求太频繁，请稍后再试",
  too_many_requests_ocsp: "证书状态查询太频繁，请稍后再试",
  // the certificate authority
  ca_exists: "该目录中已有 CA",
};

// 404 answers a page explains, by their message: login with a phone no account has.
const NOT_FOUND = {
  "person not found: for this phone": "该手机号尚未注册，请先注册",
};

// 503 answers name the system that did not answer ("identity_authority unavailable: …").
const SYSTEMS = {
  identity_authority: "身份核验机构（权威库）暂时无法访问，请稍后再试",
  tsa: "时间戳服务暂时不可用，请稍后再试",
};
const UNAVAILABLE = "服务暂时不可用，请稍后再试";

// Rules of 422 answers: a Chinese word before the service's own message ...
const RULES = {
  required: "必填",
  max_chars: "字数超出",
  min_chars: "字数不足",
  min: "低于下限",
  max: "超过上限",
  enum: "不在可选范围",
  type: "格式不对",
  check_digit: "校验位不对",
  format: "格式不对",
  count: "照片张数不对",
  not_an_image: "不是图片",
  not_the_named_party: "与文件所列当事人不一致",
  initiator_first: "发起人须为文件所列当事人之一",
  own_invite: "这是您本人的二维码，请发给对方扫码",
  from_invite: "由实名信息自动填写",
};

// ... or a whole sentence, without the (English) message of the service.
const SENTENCES = {
  authority_mismatch: "姓名与身份证号不一致（权威库核验未通过）",
  authority_no_record: "权威库中没有这个身份证号",
  authority_invalid_id: "权威库不接受这个身份证号，请核对",
  authority_invalid_name: "权威库不接受这个姓名，请按身份证上的姓名填写",
  authority_no_photo: "权威库中没有您的证件照，无法进行人脸比对",
  authority_photo_unusable: "权威库中您的证件照无法用于比对",
  liveness_required: "本平台要求用摄像头现场核验，不接受上传照片",
  no_face: "照片中未检测到人脸",
  multiple_faces: "照片中有多张人脸",
  face_too_small: "人脸太小，请靠近镜头",
};

// Seconds as a person reads a wait: "30 秒", "15 分钟".
export function waitText(seconds) {
  return seconds < 120 ? `${seconds} 秒` : `${Math.ceil(seconds / 60)} 分钟`;
}

export class ApiError extends Error {
  constructor(status, error) {
    const said = error.code === "unavailable" ? SYSTEMS[String(error.message).split(" ", 1)[0]] || UNAVAILABLE
      : REASONS[error.message] || NOT_FOUND[error.message];
    const wait = error.retry_after ? `（${waitText(error.retry_after)}后可再试）` : "";
    super((said || error.message || `请求失败（${status}）`) + wait);
    this.status = status;
    this.code = error.code;
    this.field = error.field || null;
    this.rule = error.rule || null;
    this.violations = error.violations || (error.field ? [error] : []);
    this.reason = error.message;
    this.retryAfter = error.retry_after || null;
  }
}

// Not logged in: no session (session_required), or it ended (logout, another
// device, idle, too old, frozen account; the gateway cleared its cookie).
const ENDED = /^(session_(required|revoked|expired|invalid)|account_frozen)$/;

export function loggedOut(error) {
  return error instanceof ApiError && error.status === 403 && ENDED.test(error.reason || "");
}

// `toLogin`: a refusal for want of a session sends the browser to log in.
async function request(method, path, body, accept, toLogin = true) {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(`/api/v1${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!answer.ok) {
    let error = { code: "http_" + answer.status, message: `请求失败（${answer.status}）` };
    try { error = (await answer.json()).error || error; } catch { /* not JSON */ }
    const failure = new ApiError(answer.status, error);
    if (loggedOut(failure)) {
      // any reason but session_required means the browser had a session that has ended: say why
      if (failure.reason !== "session_required") sessionStorage.setItem(ENDED_REASON, failure.message);
      if (toLogin) goToLogin();
    }
    throw failure;
  }
  return answer;
}

export async function api(method, path, body) {
  return (await request(method, path, body, "application/json")).json();
}

export async function apiBlob(path, accept = "application/pdf") {
  return (await request("GET", path, undefined, accept)).blob();
}

// -- navigation ---------------------------------------------------------------

// The start page logs in itself: elsewhere, go there and come back after.
export function goToLogin() {
  if (location.pathname === "/") return;
  location.assign("/?next=" + encodeURIComponent(location.pathname + location.search));
}

// Who is logged in (GET /me: the person's status), or null when nobody is;
// it sends nobody to log in (a page anyone may use asks it too).
export async function whoIsLoggedIn() {
  try {
    return await (await request("GET", "/me", undefined, "application/json", false)).json();
  } catch (error) {
    if (loggedOut(error)) return null;
    throw error;
  }
}

// A page for logged-in people: who is logged in, or null once the browser is on its way to log in.
export async function requireLogin() {
  const me = await whoIsLoggedIn();
  if (!me) goToLogin();
  return me;
}

// Only a path (and query) on this site: never an open redirect to another origin.
// The path is checked after the URL parser has normalised it ("/.//evil.example"
// becomes "//evil.example", which a browser reads as another host), and the
// answer is absolute on this origin, so no spelling of it can leave the site.
export function nextPath() {
  const next = new URLSearchParams(location.search).get("next");
  if (!next || !/^\/(?![/\\])/.test(next)) return null;
  const url = new URL(next, location.origin);
  if (url.origin !== location.origin || /^[/\\]{2}/.test(url.pathname)) return null;
  return location.origin + url.pathname + url.search;
}

// -- DOM -------------------------------------------------------------------------

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function $(selector, root = document) { return root.querySelector(selector); }

// An API time (ISO 8601) as the person reads it: local date and 24-hour time.
export function localTime(iso) { return new Date(iso).toLocaleString("zh-CN", { hour12: false }); }

// -- errors ------------------------------------------------------------------------

export function clearErrors(root) {
  for (const slot of root.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const input of root.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

// The slot for "lender.phone" is data-error-for="lender.phone"; "furnishings.2.count"
// falls back to "furnishings"; a field the page does not show, to `fallback`,
// then to the root's general slot "_form".
function slotFor(root, field, fallback) {
  const parts = (field || "").split(".");
  for (let n = parts.length; n > 0; n -= 1) {
    const slot = root.querySelector(`[data-error-for="${CSS.escape(parts.slice(0, n).join("."))}"]`);
    if (slot) return slot;
  }
  return (fallback && root.querySelector(`[data-error-for="${fallback}"]`))
    || root.querySelector('[data-error-for="_form"]');
}

export function showError(error, root, fallback) {
  clearErrors(root);
  if (!(error instanceof ApiError)) {
    const slot = slotFor(root, null, fallback);
    if (slot) slot.textContent = "网络或页面错误：" + error.message;
    console.error(error);
    return;
  }
  const items = error.violations.length ? error.violations : [{ field: null }];
  for (const item of items) {
    const slot = slotFor(root, item.field, fallback);
    if (!slot) continue;
    const text = !item.field ? error.message
      : SENTENCES[item.rule] || [RULES[item.rule], item.message].filter(Boolean).join("：");
    slot.textContent = slot.textContent ? `${slot.textContent}；${text}` : text;
    const input = slot.closest(".field")?.querySelector("input, select, textarea");
    if (input) input.setAttribute("aria-invalid", "true");
  }
}

// Runs an action of a form: its button is disabled meanwhile, its errors shown.
export async function act(root, action, fallback) {
  const buttons = root.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  clearErrors(root);
  try {
    return await action();
  } catch (error) {
    showError(error, root, fallback);
    return undefined;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// -- files ----------------------------------------------------------------------------

export function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function base64Blob(text, type) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

// A visible link to a blob (kept on the page) that is also clicked once.
export function offerDownload(blob, filename, where, label) {
  const link = el("a", { href: URL.createObjectURL(blob), download: filename, class: "download" }, label || filename);
  where.replaceChildren(link);
  link.click();
  return link;
}

export function showPdf(blob, frame) {
  if (frame.dataset.url) URL.revokeObjectURL(frame.dataset.url);
  frame.dataset.url = URL.createObjectURL(blob);
  frame.src = frame.dataset.url;
  frame.hidden = false;
}

// The header every page shares: 退出登录 when logged in. Logging out ends the
// session at identity, whose answer clears the cookie (as does the 403 for a
// session that has ended already). No script can drop the cookie itself, so
// while the gateway cannot be reached the session holds and the button says so.
export function initHeader(loggedIn) {
  const out = $("#logout");
  if (!out) return;
  out.hidden = !loggedIn;
  if (out.dataset.wired) return;
  out.dataset.wired = "yes";
  out.addEventListener("click", async () => {
    out.disabled = true;
    try {
      await api("POST", "/sessions/current/revoke");
    } catch (error) {
      if (!loggedOut(error)) { // not "ended already": offline, or a service away
        out.textContent = "退出失败，请重试";
        out.disabled = false;
        return;
      }
    }
    location.assign("/");
  });
}

// Identity assurance levels (services/common/assurance.py) in words.
export const ASSURANCE_LEVELS = {
  self_declared: "本人声明（未经权威核验，仅限开发测试）",
  authority_two_element: "权威库姓名与身份证号核验通过",
  authority_face: "上传照片与权威库证件照人脸比对通过",
  authority_face_liveness: "活体检测及权威库证件照人脸比对通过",
};

export function assuranceText(level) { return ASSURANCE_LEVELS[level] || level || "未认证"; }
