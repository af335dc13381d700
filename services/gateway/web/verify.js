// Verify a signed PDF: POST /verify, then every check of every signature and
// document time-stamp, and the overall result.
import { $, act, api, el, initHeader, readBase64, whoIsLoggedIn } from "./api.js";

const form = $("#verify-form");

function check(label, ok, detail) {
  return el("li", { class: ok ? "ok" : "bad" }, el("span", { class: "mark" }, ok ? "✓" : "✗"), ` ${label}`,
    detail ? el("small", {}, `（${detail}）`) : null);
}

function signatureCard(entry, index) {
  const title = entry.kind === "document_timestamp" ? `文档时间戳 ${index + 1}` : `签名 ${index + 1}：${entry.signer || "未知签署人"}`;
  const stamp = entry.timestamp;
  return el("article", { class: "signature" }, el("h3", {}, title),
    el("ul", { class: "checks-list" },
      check("签名后内容未被篡改", entry.intact),
      check("签名数学上有效", entry.valid),
      check("证书链可信（平台根证书）", entry.trusted),
      check("证书未被吊销", !entry.revoked, entry.revocation_time ? `吊销于 ${entry.revocation_time}` : ""),
      stamp ? check("可信时间戳", stamp.intact && stamp.valid && stamp.trusted, stamp.time || "") : check("可信时间戳", false, "无"),
      entry.docmdp_ok === null || entry.docmdp_ok === undefined ? null : check("签名后的修改在允许范围内", entry.docmdp_ok,
        entry.modification_level || "")),
    entry.problems && entry.problems.length ? el("ul", { class: "problems" }, entry.problems.map((p) => el("li", {}, p))) : null);
}

// Whether the agreement is in force: the flow's status from the evidence log, by the PDF's hash.
function showStatus(status) {
  if (!status) { $("#agreement").hidden = true; return; }
  $("#agreement").hidden = false;
  $("#agreement-status").textContent = `文件状态：${status.status_text}`;
  $("#agreement-status").className = status.known && status.in_force ? "status ok" : "status bad";
  const detail = [];
  if (status.known) {
    detail.push(`《${status.title}》，此文件为${status.version_text}${status.latest_version ? "" : "（已有更新的版本）"}。`);
    if (status.evidence) detail.push(`状态记录在证据日志第 ${status.evidence.index} 条，可由签名检查点证明（树大小 ${status.evidence.tree_size}）。`);
    const w = status.witnesses;
    if (w && w.configured) {
      detail.push(w.witnessed
        ? `该检查点已由 ${w.cosigned.length} 个独立见证人联署（${w.cosigned.map((c) => c.name).join("、")}）。`
        : `该检查点未经足够的独立见证人联署（${w.cosigned.length}/${w.threshold}），仅凭平台自身签名。`);
    }
  }
  $("#agreement-detail").textContent = detail.join("");
}

function show(result) {
  $("#result").hidden = false;
  showStatus(result.document_status);
  const status = result.document_status;
  const notInForce = status && status.known && !status.in_force;
  // valid signatures on an agreement that was voided (or never took effect) are not an agreement in force
  $("#verdict").textContent = !result.ok ? "验证未通过"
    : notInForce ? `签名有效，但文件当前状态为：${status.status_text}` : "验证通过：文件签署有效";
  $("#verdict").className = result.ok && !notInForce ? "ok" : "bad";
  $("#problems").replaceChildren(...(result.problems || []).map((p) => el("li", {}, p)));
  $("#overall").replaceChildren(
    check("含签名", result.signatures.length > 0, `${result.signatures.length} 个`),
    check("最后签名后未追加改动", !result.modified_after_last_signature),
    check("含长期验证数据（LTV）", result.has_validation_data),
  );
  $("#signatures").replaceChildren(...result.signatures.map(signatureCard),
    ...(result.document_timestamps || []).map(signatureCard));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  act(form, async () => {
    const file = form.elements.pdf.files[0];
    if (!file) { form.querySelector('[data-error-for="pdf"]').textContent = "请选择 PDF 文件"; return; }
    show(await api("POST", "/verify", { pdf: await readBase64(file) }));
  });
});

// anyone may verify: 退出登录 only for someone logged in, and nobody is sent to log in
whoIsLoggedIn().then((person) => initHeader(Boolean(person)), () => initHeader(false));
