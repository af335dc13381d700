// 我的文件: everything the person made or is a party to, newest first
// (GET /me/files): filters by status and template, search by title or the
// counterparty's name, and the next page by the answer's cursor. A flow opens
// its page; a draft opens the editor to go on with it.
import { $, act, api, el, initHeader, requireLogin } from "./api.js";

// services/common/listing.py STATUSES, as the person sees each
export const STATUS_TEXT = {
  draft: "草稿",
  to_sign: "待我签署",
  waiting_others: "待对方签署",
  completed: "已生效",
  void_requested: "作废中",
  voided: "已作废",
  declined: "已拒签",
  expired: "已过期",
  cancelled: "已撤销",
  disputed: "身份争议",
};
// the badge colours flow.html uses, by the state they stand for
const BADGE = { to_sign: "waiting", waiting_others: "waiting", draft: "draft" };

const form = $("#files-form");
let cursor = null;

function when(iso) { return iso ? iso.slice(0, 10) : ""; }

function link(item) {
  return item.kind === "flow" ? `/flows/${item.flow_id}` : `/new?document=${item.document_id}`;
}

function card(item) {
  const others = item.counterparties.map((p) => `${p.role}：${p.name || "未填写"}`).join("，");
  const facts = [
    item.amount ? `金额 ¥${item.amount}` : null,
    item.due_date ? `到期 ${item.due_date}` : null,
    `更新于 ${when(item.updated_at)}`,
  ].filter(Boolean).join(" · ");
  return el("li", { class: "file", dataset: { id: item.id, status: item.status } },
    el("a", { href: link(item) },
      el("span", { class: "badge", dataset: { state: BADGE[item.status] || item.status } },
        STATUS_TEXT[item.status] || item.status),
      el("strong", {}, ` ${item.title}`),
      item.my_role ? el("small", {}, `（我是${item.my_role}）`) : null),
    others ? el("div", { class: "counterparty" }, others) : null,
    el("small", {}, facts));
}

function params(after) {
  const query = new URLSearchParams();
  const data = new FormData(form);
  for (const name of ["q", "status", "template"]) {
    const value = String(data.get(name) || "").trim();
    if (value) query.set(name, value);
  }
  if (after) query.set("cursor", after);
  return query;
}

async function load(more) {
  const page = await api("GET", `/me/files?${params(more ? cursor : null)}`);
  const list = $("#files");
  if (!more) list.replaceChildren();
  list.append(...page.items.map(card));
  cursor = page.next_cursor;
  $("#files-more").hidden = !cursor;
  $("#files-empty").hidden = list.children.length > 0;
}

async function main() {
  initHeader(false);
  try {
    if (!await requireLogin()) return;
  } catch (error) {
    $("#files-error").textContent = error.message;
    return;
  }
  initHeader(true);
  $("#files-status").append(...Object.entries(STATUS_TEXT).map(([value, text]) => el("option", { value }, text)));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(form, () => load(false));
  });
  $("#files-more").addEventListener("click", () => act(form, () => load(true)));
  try {
    const templates = await api("GET", "/templates");
    $("#files-template").append(...templates.map((t) => el("option", { value: t.id }, t.title)));
    await load(false);
  } catch (error) {
    $("#files-error").textContent = error.message;
  }
}

main();
