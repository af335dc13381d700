// New document: a template chosen from GET /templates, then the document
// editor (editor.js): its form, draft → render → PDF preview → start the flow.
// With ?document=<id> (a draft from 我的文件), that draft is taken up again.
import { $, api, el, initHeader, requireLogin } from "./api.js";
import { editDocument, resumeDocument } from "./editor.js";

async function main() {
  initHeader(false);
  try {
    if (!await requireLogin()) return;
    initHeader(true);
    const templates = await api("GET", "/templates");
    $("#templates").replaceChildren(...templates.map((t) => el("button", {
      type: "button", role: "radio", "aria-checked": "false", class: "choice", dataset: { template: t.id },
      onclick: (event) => {
        document.querySelectorAll("#templates .choice").forEach((b) => b.setAttribute("aria-checked", "false"));
        event.currentTarget.setAttribute("aria-checked", "true");
        editDocument(t);
      },
    }, el("strong", {}, t.title), el("small", {}, t.description || ""))));
    const draftId = new URLSearchParams(location.search).get("document");
    if (draftId) {
      const draft = await api("GET", `/documents/${encodeURIComponent(draftId)}`);
      const template = templates.find((t) => t.id === draft.template_id);
      document.querySelector(`#templates .choice[data-template="${template.id}"]`).setAttribute("aria-checked", "true");
      resumeDocument(template, draft);
    }
  } catch (error) {
    $("#templates-error").textContent = error.message;
  }
}

main();
