// The pages' one shared module: the /api/v1 client, the session kept in
// sessionStorage, and showing an API error next to the field it names.

const TOKEN = "esign.token";
const PERSON = "esign.person";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get personId() { return sessionStorage.getItem(PERSON); },
  save(answer) {
    sessionStorage.setItem(TOKEN, answer.token);
    sessionStorage.setItem(PERSON, answer.person_id);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(PERSON);
  },
};

// Reasons of 403/409 answers, said in Chinese; anything else shows its message.
const REASONS = {
  session_required: "请先登录",
  token_expired: "登录已过期，请重新登录",
  token_bad_signature: "登录已失效，请重新登录",
  token_malformed: "登录已失效，请重新登录",
  otp_wrong_code: "验证码错误",
  otp_expired: "验证码已过期，请重新获取",
  otp_locked: "错误次数过多，请稍后再试",
  otp_already_used: "验证码已使用，请重新获取",
  otp_resend_too_soon: "发送太频繁，请稍后再试",
  otp_send_limit: "今日发送次数已达上限",
  phone_not_confirmed: "请先验证手机号",
  phone_confirmation_expired: "手机验证已过期，请重新获取验证码",
  phone_registered: "该手机号已注册，请直接登录",
  id_number_registered: "该身份证号已注册",
  face_not_verified: "请先完成人脸核验",
  reverification_required: "证书已吊销，请重新人脸核验",
  liveness_not_passed: "需要先完成活体检测",
  willingness_failed: "意愿认证未通过",
  willingness_used: "意愿认证已使用，请重新签署",
  not_a_party: "您不是该文件的签署方",
  not_your_turn: "还没轮到您签署",
  already_signed: "您已签署",
  flow_expired: "文件已过期",
  certificate_not_valid: "证书无效，请重新领取",
  void_requester_cannot_confirm: "作废申请人不能自己确认",
  void_already_confirmed: "您已确认作废",
  pending_action_expired: "操作已超时，请重新开始",
  document_in_flow: "文件已发起签署，不能再修改",
  invite_invalid: "二维码无效，请让对方重新生成",
  invite_expired: "二维码已过期，请让对方重新生成",
  "person not found: for this phone": "该手机号尚未注册，请先注册",
};

// Rules of 422 answers: a Chinese word before the service's own message.
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
  not_registered: "对方尚未完成实名认证",
  not_the_named_party: "与文件所列当事人不一致",
  initiator_first: "发起人须为文件所列当事人之一",
  own_invite: "这是您本人的二维码，请发给对方扫码",
  from_invite: "由实名信息自动填写",
};

export class ApiError extends Error {
  constructor(status, error) {
    const reason = REASONS[error.message] || REASONS[error.code];
    const wait = error.retry_after ? `（${error.retry_after} 秒后可再试）` : "";
    super((reason || error.message || `请求失败（${status}）`) + wait);
    this.status = status;
    this.code = error.code;
    this.field = error.field || null;
    this.rule = error.rule || null;
    this.violations = error.violations || (error.field ? [error] : []);
    this.reason = error.message;
  }
}

function loginExpired(error) {
  return error.status === 403 && /^(session_required|token_)/.test(error.reason || "");
}

async function request(method, path, body, accept) {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const answer = await fetch(`/api/v1${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!answer.ok) {
    let error = { code: "http_" + answer.status, message: `请求失败（${answer.status}）` };
    try { error = (await answer.json()).error || error; } catch { /* not JSON */ }
    const failure = new ApiError(answer.status, error);
    if (loginExpired(failure)) { session.clear(); goToLogin(); }
    throw failure;
  }
  return answer;
}

export async function api(method, path, body) {
  return (await request(method, path, body, "application/json")).json();
}

export async function apiBlob(path) {
  return (await request("GET", path, undefined, "application/pdf")).blob();
}

// -- navigation ---------------------------------------------------------------

export function goToLogin() {
  location.assign("/?next=" + encodeURIComponent(location.pathname + location.search));
}

export function requireLogin() {
  if (!session.token) { goToLogin(); return false; }
  return true;
}

// Only a path (and query) on this site: never an open redirect to another origin.
export function nextPath() {
  const next = new URLSearchParams(location.search).get("next");
  if (!next || !/^\/(?![/\\])/.test(next)) return null;
  const url = new URL(next, location.origin);
  return url.origin === location.origin ? url.pathname + url.search : null;
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
    const text = item.field ? [RULES[item.rule], item.message].filter(Boolean).join("：") : error.message;
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

// The header every page shares: show who is logged in, and log out.
export function initHeader() {
  const out = $("#logout");
  if (!out) return;
  out.hidden = !session.token;
  out.addEventListener("click", () => { session.clear(); location.assign("/"); });
}
