// A signing flow (/flows/{id}, the link of the sign-request SMS): the document,
// whose turn it is, and what this person may do now: sign (handwriting +
// 意愿认证 by SMS code or by the live face through the camera), remind the
// party whose turn it is (催签, once a day), decline,
// request / confirm / reject a void (same 意愿认证), download the signing report
// and the evidence package (证据包, a ZIP that esign verify checks offline).
// A flow whose party's identity was taken back says so (cancelled or 身份争议).
import {
  $, act, api, apiBlob, assuranceText, base64Blob, el, initHeader, offerDownload, requireLogin, showPdf,
} from "./api.js";
import { faceBox, isCameraError } from "./facecheck.js";

const flowId = decodeURIComponent(location.pathname.split("/")[2] || "");
const STATES = {
  draft: "草稿", waiting: "待签署", completed: "已生效", declined: "已拒签", expired: "已过期",
  void_requested: "作废申请中", voided: "已作废", cancelled: "已取消",
};
const FLOW_REASONS = { identity_disputed: "签署方身份存在争议" };
const METHODS = { sms: "短信验证码", face: "人脸" };
let flow = null;
let myId = null; // the logged-in person (GET /me)

// -- the handwriting pad (pointer events: finger, pen or mouse) -----------------------

function signaturePad(canvas) {
  const ink = canvas.getContext("2d");
  ink.lineWidth = 5;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = "#101040";
  let last = null;
  let drawn = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = point(event);
    ink.beginPath();
    ink.moveTo(...last);
    ink.lineTo(...next);
    ink.stroke();
    last = next;
    drawn = true;
  });
  for (const end of ["pointerup", "pointercancel"]) canvas.addEventListener(end, () => { last = null; });
  return {
    get drawn() { return drawn; },
    clear() { ink.clearRect(0, 0, canvas.width, canvas.height); drawn = false; },
    png() { return canvas.toDataURL("image/png").split(",", 2)[1]; },
  };
}

const pad = signaturePad($("#pad"));
$("#pad-clear").addEventListener("click", () => pad.clear());

// -- 意愿认证: one pattern for signing and for voids ---------------------------------
// begin(method) starts the action and answers {pending_id, willingness_id, challenge};
// then the SMS code (a second submit) or the live face (开始拍摄: the camera films
// the challenge's head turns) proves willingness, and finish(pending, grant)
// completes the action. A face try that fails takes a fresh challenge.

const SPENT = new Set(["willingness_failed", "willingness_used", "willingness_expired", "pending_action_expired",
  "pending_action_used", "certificate_changed", "face_willingness_locked"]);
const RETRY = new Set(["liveness_failed", "face_mismatch", "liveness_challenge_used", "liveness_challenge_expired"]);

function wireWillingness(form, begin, finish) {
  const codeField = form.querySelector("[data-code]");
  const faceField = form.querySelector("[data-face]");
  const face = faceBox(faceField);
  const slot = (name) => form.querySelector(`[data-error-for="${name}"]`);
  const reset = () => { form.pending = null; codeField.hidden = true; face.hide(); };
  for (const radio of form.querySelectorAll('input[name="method"]')) {
    radio.addEventListener("change", () => { faceField.hidden = form.elements.method.value !== "face"; reset(); });
  }

  // The willingness check, once proved: the grant finishes the action.
  const confirm = async (proof) => {
    const pending = form.pending;
    try {
      const { grant } = await api("POST", `/willingness/${pending.willingness_id}/confirm`, proof);
      reset();
      await finish(pending, grant);
    } catch (error) {
      if (SPENT.has(error.reason)) reset();
      else if (pending.method === "face" && RETRY.has(error.reason)) {
        // the challenge is spent: a new one to perform (the check itself allows a few tries)
        try {
          face.show(await api("POST", `/willingness/${pending.willingness_id}/challenge`));
        } catch (again) {
          if (SPENT.has(again.reason)) reset();
          throw again;
        }
        throw error;
      }
      throw error;
    }
  };

  const run = (action, fallback) => act(form, async () => {
    try {
      await action();
    } catch (error) {
      if (error.reason !== "assurance_too_low") throw error;
      slot("_form").replaceChildren(error.message, " ", el("a", { href: "/" }, "去重新人脸核身"));
    }
  }, fallback);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const method = form.elements.method.value;
    run(async () => {
      if (!form.pending) {
        const started = await begin(method);
        if (!started) return;
        form.pending = { ...started, method };
        if (method === "sms") {
          codeField.hidden = false;
          slot("code").textContent = "验证码已发送到您的手机，请输入后再次提交";
          form.elements.code.focus();
          return;
        }
        face.show(started.challenge); // the head turns to perform: 开始拍摄 films them
        return;
      }
      if (form.pending.method === "sms") { await confirm({ code: form.elements.code.value.trim() }); return; }
      if (face.file) { await confirm({ selfie: await face.selfie() }); return; }
      await capture();
    }, method === "sms" ? "code" : "frames");
  });

  const capture = async () => {
    let frames;
    try {
      frames = await face.film();
    } catch (error) {
      if (!isCameraError(error)) throw error;
      slot("frames").textContent = error.message; // the challenge still holds: try again
      return;
    }
    await confirm({ frames });
  };
  face.onCapture(() => run(capture, "frames"));
}

wireWillingness($("#sign-form"), async (method) => {
  if (!pad.drawn) {
    $('#sign-form [data-error-for="signature_image"]').textContent = "请先在框内手写签名";
    return null;
  }
  return api("POST", `/flows/${flowId}/signature`, { signature_image: pad.png(), method });
}, async (pending, grant) => {
  show(await api("POST", `/flows/${flowId}/sign`, { pending_id: pending.pending_id, grant }));
  await loadPdf();
});

const voidRequest = $("#void-request-form");
wireWillingness(voidRequest, (method) => api("POST", `/flows/${flowId}/void-requests`,
  { reason: voidRequest.elements.reason.value.trim(), method }), completeAction);

wireWillingness($("#void-confirm-form"), (method) => api("POST", `/flows/${flowId}/void-confirmations`, { method }),
  completeAction);

async function completeAction(pending, grant) {
  show(await api("POST", `/actions/${pending.pending_id}/complete`, { grant }));
}

// -- the other actions -------------------------------------------------------------------

$("#void-reject").addEventListener("click", () => act($("#void-confirm-form"), async () => {
  show(await api("POST", `/flows/${flowId}/void-rejections`));
}));

const remind = $("#remind-form");
remind.addEventListener("submit", (event) => {
  event.preventDefault();
  act(remind, async () => {
    const done = await api("POST", `/flows/${flowId}/reminders`);
    $("#remind-done").textContent = `已短信提醒对方签署；${time(done.next_reminder_from)} 后可再次催签`;
  });
});

const decline = $("#decline-form");
decline.addEventListener("submit", (event) => {
  event.preventDefault();
  act(decline, async () => show(await api("POST", `/flows/${flowId}/decline`, { reason: decline.elements.reason.value.trim() })));
});

const report = $("#report-form");
report.addEventListener("submit", (event) => {
  event.preventDefault();
  act(report, async () => {
    const made = await api("POST", `/flows/${flowId}/report`);
    const links = $("#report-links");
    const name = `签约报告-${flowId.slice(0, 8)}`;
    offerDownload(base64Blob(made.report_pdf, "application/pdf"), `${name}.pdf`, links, "签约报告 PDF");
    const json = new Blob([JSON.stringify(made.report, null, 2)], { type: "application/json" });
    links.append(" ", el("a", { href: URL.createObjectURL(json), download: `${name}.json`, class: "download" }, "签约报告 JSON（可离线验证）"));
  });
});

const evidence = $("#evidence-form");
evidence.addEventListener("submit", (event) => {
  event.preventDefault();
  act(evidence, async () => {
    const zip = await apiBlob(`/flows/${flowId}/evidence`, "application/zip");
    offerDownload(zip, `证据包-${flowId.slice(0, 8)}.zip`, $("#evidence-links"), "证据包 ZIP");
  });
});

// -- showing the flow ------------------------------------------------------------------------

function time(iso) { return iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : ""; }

function show(answer) {
  flow = answer;
  const me = myId;
  const mine = flow.parties.find((p) => p.person_id === me);
  const next = flow.parties.find((p) => p.person_id === flow.next_person_id);
  document.title = `电子签 · ${flow.title}`;
  $("#title").textContent = flow.title;
  const disputed = flow.status === "disputed_identity" || flow.reason === "identity_disputed";
  $("#state").textContent = (STATES[flow.state] || flow.state)
    + (flow.state === "cancelled" && disputed ? "（签署方身份存在争议）" : "")
    + (flow.loan_state === "repaid" ? "（已还清）" : flow.loan_state === "part_repaid" ? "（部分还款）" : "");
  $("#state").dataset.state = flow.state;
  $("#dispute").hidden = flow.status !== "disputed_identity";
  const nextRole = flow.next_role || (next && next.role);
  $("#turn").textContent = flow.state !== "waiting" || !nextRole ? ""
    : next && next.person_id === me ? "轮到您签署" : `等待${nextRole}签署`;
  const detail = [];
  if (flow.state === "waiting") detail.push(`签署截止：${time(flow.expires_at)}`);
  if (flow.reason) detail.push(`原因：${FLOW_REASONS[flow.reason] || flow.reason}`);
  if (flow.disputed_identity) {
    detail.push(`${time(flow.disputed_identity.at)} 起，一位签署方的身份证号已由本人通过人脸核身认领，该方的签署身份存在争议`);
  }
  $("#detail").textContent = detail.join("　");
  $("#parties").replaceChildren(...flow.parties.map((p) => el("li", { class: p.signed_at ? "signed" : "" },
    el("strong", {}, p.role), p.person_id === me ? "（您）" : "", " ",
    p.signed_at ? `已签署 ${time(p.signed_at)}（${METHODS[p.willingness_method] || p.willingness_method}）` : "未签署",
    flow.disputed_identity?.person_id === p.person_id ? el("span", { class: "badge disputed" }, "身份争议") : null)));
  $("#sign").hidden = !(flow.state === "waiting" && next && next.person_id === me);
  $("#required-level").textContent = flow.required_assurance
    ? `本文件要求签署人认证等级：${assuranceText(flow.required_assurance)}` : "";
  $("#decline").hidden = !(flow.state === "waiting" && mine && !mine.signed_at);
  $("#remind").hidden = !(flow.state === "waiting" && mine && next && next.person_id !== me);
  $("#void-request").hidden = !(flow.state === "completed" && mine);
  $("#void-answer").hidden = !(flow.state === "void_requested" && mine && flow.void_requested_by !== me);
  $("#void-reason-shown").textContent = flow.reason ? `作废原因：${flow.reason}` : "";
  $("#report").hidden = !["completed", "voided", "void_requested"].includes(flow.state);
}

// -- a signed IOU's life: where it stands, its statements, 还款确认 and 展期 -------------------

const LOAN_STATES = { active: "未还清", part_repaid: "部分还款", repaid: "已还清" };
const STATEMENTS = { repayment: "还款确认书", extension: "借款展期协议" };
const yuan = (amount) => `¥${amount}`;

function statementLink(flowIdOf, text) { return el("a", { href: `/flows/${flowIdOf}` }, text); }

function showLoan(loan) {
  $("#loan").hidden = false;
  const late = loan.overdue ? "（已逾期）" : "";
  $("#loan-summary").textContent = `${LOAN_STATES[loan.state] || loan.state}：未还本金 ${yuan(loan.principal_outstanding)}，`
    + `应付利息 ${yuan(loan.interest_owed)}，还款日 ${loan.repayment_date}${late}`;
  $("#loan-detail").textContent = `借款本金 ${yuan(loan.principal)}，年利率 ${loan.annual_rate}%，起息日 ${loan.start_date}，`
    + `已还合计 ${yuan(loan.repaid_total)}（截至 ${loan.as_of}）`;
  const history = [
    ...loan.repayments.map((r) => [r.date, el("li", {}, `${r.date} 收到还款 ${yuan(r.amount)}（${r.method}），抵充利息 `
      + `${yuan(r.interest)}、本金 ${yuan(r.principal)}，剩余本金 ${yuan(r.principal_after)} `,
    statementLink(r.statement_flow_id, "还款确认书"))]),
    ...loan.extensions.map((x) => [x.agreed_on, el("li", {}, `${x.agreed_on} 展期至 ${x.repayment_date}`
      + (x.annual_rate !== null ? `，年利率 ${x.annual_rate}%` : "") + " ", statementLink(x.statement_flow_id, "借款展期协议"))]),
  ].sort((a, b) => a[0].localeCompare(b[0])).map(([, item]) => item);
  $("#loan-history").replaceChildren(...history);
  const pending = loan.pending_statement;
  $("#loan-pending").hidden = !pending;
  if (pending) {
    $("#loan-pending").replaceChildren(`${STATEMENTS[pending.statement] || pending.title}签署中：`,
      statementLink(pending.flow_id, "查看并签署"));
  }
  const open = loan.state !== "repaid" && !pending && flow.state === "completed";
  $("#repay").hidden = !(open && loan.lender_person_id === myId);
  $("#extend").hidden = !open;
  if (!$("#repay-date").value) $("#repay-date").value = loan.as_of;
}

async function loadLoan() {
  if (flow.parent_flow_id) {
    const about = await api("GET", `/flows/${flow.parent_flow_id}`);
    $("#statement-of").hidden = false;
    $("#statement-text").replaceChildren(`本文件是关于`, statementLink(about.flow_id, `《${about.title}》`),
      `的${STATEMENTS[flow.statement] || "补充文件"}：签署完成后对原文件生效，原文件本身不变。`);
  }
  if (flow.loan_state) showLoan(await api("GET", `/flows/${flowId}/loan`));
}

function wireLoan() {
  const statement = (form, path, body) => act(form, async () => {
    const made = await api("POST", `/flows/${flowId}/${path}`, body());
    location.assign(`/flows/${made.flow_id}`);
  });
  $("#repay-form").addEventListener("submit", (event) => {
    event.preventDefault();
    statement($("#repay-form"), "repayments", () => ({
      amount: $("#repay-amount").value.trim(), date: $("#repay-date").value, method: $("#repay-method").value,
    }));
  });
  $("#extend-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const rate = $("#extend-rate").value.trim();
    statement($("#extend-form"), "extensions", () => ({
      repayment_date: $("#extend-date").value, ...(rate ? { annual_rate: rate } : {}),
    }));
  });
}

async function loadPdf() {
  const pdf = await apiBlob(`/flows/${flowId}/pdf`);
  showPdf(pdf, $("#pdf"));
  $("#pdf-link").replaceChildren(el("a", { href: $("#pdf").dataset.url, download: `${flow.title}.pdf`, class: "download" }, "下载 PDF"));
}

// A person invited before registering is not yet a party: the document names
// them, so joining takes their place (403 not_a_party if it does not).
async function openFlow() {
  try {
    return await api("GET", `/flows/${flowId}`);
  } catch (error) {
    if (error.reason !== "not_a_party") throw error;
    return api("POST", `/flows/${flowId}/join`);
  }
}

async function main() {
  initHeader(false);
  try {
    const person = await requireLogin();
    if (!person) return;
    initHeader(true);
    myId = person.person_id;
    show(await openFlow());
    wireLoan();
    await loadLoan();
    await loadPdf();
  } catch (error) {
    $("#flow-error").textContent = error.message;
  }
}

main();
