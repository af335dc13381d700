// A receipt (收据) opened from someone's QR code (我的二维码): the link's
// ?invite= token says who invites and on which side. The server fills both
// parties from the real-name records, so the form asks only for the rest;
// then the document editor's render → preview → start steps.
import { $, api, initHeader, localTime, requireLogin, showError } from "./api.js";
import { editDocument } from "./editor.js";

async function main() {
  initHeader(false);
  const token = new URLSearchParams(location.search).get("invite");
  if (!token) {
    $("#invite-info").textContent = "链接不完整：请重新扫描对方的二维码。";
    return;
  }
  const path = `/receipt-invites/${encodeURIComponent(token)}`;
  try {
    if (!await requireLogin()) return; // login comes back here, the invite included
    initHeader(true);
    const invite = await api("GET", path);
    if (invite.own_invite) {
      $("#invite-info").textContent = "这是您自己的二维码：请让对方扫描它来开具收据。";
      return;
    }
    const template = (await api("GET", "/templates")).find((t) => t.id === invite.template_id);
    const yours = template.roles.find((r) => r.id !== invite.role);
    $("#invite-info").textContent =
      `${invite.inviter_name_masked} 邀请您开具收据：对方为${invite.role_label}，您为${yours.label}。`;
    $("#invite-expiry").textContent = `二维码有效期至 ${localTime(invite.expires_at)}`;
    editDocument(template, {
      omit: [template.initiator_field, ...template.roles.map((r) => r.person_field)],
      create: (_template, values) => api("POST", `${path}/documents`, { values }),
    });
  } catch (error) {
    $("#invite-info").textContent = "无法打开这个二维码。";
    showError(error, $("#invite"), "invite");
  }
}

main();
