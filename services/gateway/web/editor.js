// The document editor both /new and /receipts/new use: a form generated from
// a template's field definitions, then draft → render → PDF preview → start the
// flow. The page supplies the template, the fields it leaves out and how the
// draft is created; the markup (#document-form, #fields, #preview, #flow-form)
// is the page's.
import { $, act, api, apiBlob, el, readBase64, showPdf } from "./api.js";

const UNITS = { money: "元", rate: "%" };
const state = { template: null, readers: [], imageFields: [], documentId: null, order: [], create: null, resumed: false };

// -- one builder per field type: each returns [element, read()] -------------------
// read() answers the JSON value, or undefined when the person left it empty.

function slot(name) { return el("span", { class: "error", "data-error-for": name }); }

function labelled(field, control, ...extra) {
  const id = `f-${field.name}`;
  control.id = id;
  control.name = field.name;
  const suffix = field.unit || UNITS[field.type];
  return el("div", { class: "field", dataset: { field: field.name } },
    el("label", { for: id }, field.label, field.required === false ? el("small", {}, "（选填）") : null),
    el("div", { class: "row" }, field.prefix ? el("span", { class: "affix" }, field.prefix) : null, control,
      suffix ? el("span", { class: "affix" }, suffix) : null),
    ...extra, field.help ? el("small", { class: "hint" }, field.help) : null, slot(field.name));
}

const text = (v) => (v.trim() === "" ? undefined : v.trim());

const BUILDERS = {
  text(field) {
    const input = field.multiline
      ? el("textarea", { rows: 3, maxlength: field.max_chars })
      : el("input", { maxlength: field.max_chars, autocomplete: "off" });
    return [labelled(field, input), () => text(input.value)];
  },
  enum(field) {
    const select = el("select", {}, el("option", { value: "" }, "请选择"),
      field.choices.map((c) => el("option", { value: c }, c)));
    return [labelled(field, select), () => select.value || undefined];
  },
  bool(field) {
    const select = el("select", {}, el("option", { value: "" }, "请选择"),
      el("option", { value: "true" }, field.true_label || "是"), el("option", { value: "false" }, field.false_label || "否"));
    return [labelled(field, select), () => (select.value === "" ? undefined : select.value === "true")];
  },
  money(field) {
    const input = el("input", { inputmode: "decimal", autocomplete: "off" });
    return [labelled(field, input), () => text(input.value)];
  },
  int(field) {
    const input = el("input", { type: "number", step: 1, min: field.min, max: field.max, inputmode: "numeric" });
    return [labelled(field, input), () => (input.value === "" ? undefined : Number(input.value))];
  },
  date(field) {
    const input = el("input", { type: "date" });
    return [labelled(field, input), () => input.value || undefined];
  },
  datetime(field) {
    const input = el("input", { type: "datetime-local", step: 60 });
    return [labelled(field, input), () => input.value || undefined];
  },
  person(field) {
    const parts = [["name", "姓名", "name"], ["id_number", "身份证号", "off"], ["phone", "手机号", "tel"]];
    const inputs = {};
    const box = el("fieldset", { class: "person", dataset: { field: field.name } }, el("legend", {}, field.label),
      parts.map(([key, label, auto]) => {
        inputs[key] = el("input", { id: `f-${field.name}-${key}`, name: `${field.name}.${key}`, autocomplete: auto,
          inputmode: key === "phone" ? "numeric" : null, maxlength: key === "id_number" ? 18 : null });
        return el("div", { class: "field" }, el("label", { for: inputs[key].id }, label), inputs[key], slot(`${field.name}.${key}`));
      }), slot(field.name));
    const read = () => {
      const person = Object.fromEntries(parts.map(([key]) => [key, inputs[key].value.trim()]));
      return Object.values(person).every((v) => v === "") ? undefined : person;
    };
    return [box, read];
  },
  enum_set(field) {
    const boxes = field.choices.map((c) => el("input", { type: "checkbox", value: c, name: field.name }));
    const other = field.max_other ? el("input", { placeholder: "其他，用“、”分隔", name: `${field.name}-other` }) : null;
    const box = el("fieldset", { class: "field", dataset: { field: field.name } }, el("legend", {}, field.label),
      el("div", { class: "checks" }, boxes.map((b) => el("label", {}, b, b.value))), other, slot(field.name));
    const read = () => {
      const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
      const extra = other ? other.value.split(/[、,，]/).map((s) => s.trim()).filter(Boolean) : [];
      return chosen.length + extra.length ? chosen.concat(extra) : undefined;
    };
    return [box, read];
  },
  counts(field) {
    const counts = field.items.map((name) => [name, el("input", { type: "number", min: 0, max: field.max_count || 99, step: 1,
      value: 0, inputmode: "numeric", "aria-label": name })]);
    const other = field.max_free ? el("input", { placeholder: "其他：名称×数量，用“、”分隔", name: `${field.name}-other` }) : null;
    const box = el("fieldset", { class: "field", dataset: { field: field.name } }, el("legend", {}, field.label),
      el("div", { class: "counts" }, counts.map(([name, input]) => el("label", {}, name, input))), other, slot(field.name));
    const read = () => {
      const items = counts.map(([name, input]) => ({ name, count: Number(input.value || 0) })).filter((i) => i.count > 0);
      for (const entry of other ? other.value.split(/[、,，]/) : []) {
        const [name, count] = entry.split(/[×xX*:：]/).map((s) => s.trim());
        if (name) items.push({ name, count: Number(count || 1) });
      }
      return items.length ? items : undefined;
    };
    return [box, read];
  },
  images(field) {
    const input = el("input", { type: "file", accept: "image/jpeg,image/png,image/webp", multiple: true });
    return [labelled(field, input, el("small", { class: "hint" }, `最多 ${field.max_items} 张`)), () => undefined, input];
  },
};
BUILDERS.rate = BUILDERS.money;
BUILDERS.decimal = BUILDERS.money;

// -- the form of a template ------------------------------------------------------------

const createDraft = (template, values) => api("POST", "/documents", { template_id: template.id, values });

// Shows the form of `template` without the fields named in `omit`; `create(values)`
// answers the new draft (default: POST /documents).
export function editDocument(template, { omit = [], create = createDraft } = {}) {
  wire();
  Object.assign(state, { template, readers: [], imageFields: [], documentId: null, order: [], create, resumed: false });
  $("#template-title").textContent = template.title;
  $("#template-description").textContent = template.description || "";
  const fields = $("#fields");
  fields.replaceChildren();
  for (const field of template.fields) {
    const build = BUILDERS[field.type];
    if (!build || omit.includes(field.name)) continue;
    const [node, read, fileInput] = build(field);
    if (field.type === "images") state.imageFields.push({ field, input: fileInput });
    else state.readers.push([field.name, read]);
    if (field.name === template.initiator_field) node.querySelector("label").append(el("small", {}, "（您的身份）"));
    fields.append(node);
  }
  $("#document-form").hidden = false;
  $("#preview").hidden = true;
}

// Goes on with a saved draft (我的文件): `document` is GET /documents/{id}. Its values
// are not shown again (the form starts empty): what is filled in now is merged into
// them, and an empty field keeps what was saved. A rendered draft shows its preview.
export function resumeDocument(template, document) {
  editDocument(template);
  Object.assign(state, { documentId: document.document_id, resumed: true });
  $("#template-description").textContent = "继续编辑草稿：已保存的内容不在表单中显示，只需填写要补充或修改的项，留空的项保持不变。";
  if (document.status === "rendered") preview(document);
}

// -- draft, render, preview, start ------------------------------------------------------

function values(patching) {
  const out = {};
  for (const [name, read] of state.readers) {
    const value = read();
    if (value !== undefined) out[name] = value;
    else if (patching) out[name] = null; // removes what an earlier submit stored
  }
  return out;
}

async function attachImages() {
  for (const { field, input } of state.imageFields) {
    let n = 0;
    for (const file of input.files) {
      n += 1;
      try {
        await api("POST", `/documents/${state.documentId}/attachments`,
          { image: await readBase64(file), label: `${field.label}${n}`, field: field.name });
      } catch (error) {
        // the route names its own inputs (image, label, field): show them at this image field
        error.violations = error.violations.map((v) => ({ ...v, field: field.name }));
        throw error;
      }
    }
  }
}

async function preview(rendered) {
  const initiator = rendered.parties.find((p) => p.initiator);
  state.order = [initiator, ...rendered.parties.filter((p) => p !== initiator)];
  $("#order").replaceChildren(...state.order.map((p, i) => el("li", {}, p.label, i === 0 ? "（您）" : "")));
  $("#preview").hidden = false;
  $("#preview-note").textContent = `共 ${rendered.pages} 页，文件日期 ${rendered.document_date}。请核对无误后发起签署。`;
  try {
    const pdf = await apiBlob(`/documents/${state.documentId}/pdf`);
    showPdf(pdf, $("#pdf"));
    $("#pdf-link").replaceChildren(el("a", { href: $("#pdf").dataset.url, download: `${state.template.title}.pdf` }, "下载 PDF"));
  } catch (error) {
    $("#preview-note").textContent += `（PDF 预览暂不可用：${error.message}）`;
  }
  $("#preview").scrollIntoView();
}

let wired = false;

function wire() {
  if (wired) return;
  wired = true;
  const form = $("#document-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(form, async () => {
      if (state.documentId) {
        // a resumed draft's empty fields keep their saved values; otherwise the form is the whole draft
        await api("PATCH", `/documents/${state.documentId}`, { values: values(!state.resumed) });
      } else {
        state.documentId = (await state.create(state.template, values(false))).document_id;
      }
      await attachImages();
      await preview(await api("POST", `/documents/${state.documentId}/render`));
    });
  });

  const flowForm = $("#flow-form");
  flowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    act(flowForm, async () => {
      // Each party is identified by the person the document names for the role.
      const flow = await api("POST", "/flows", {
        document_id: state.documentId, parties: state.order.map((p) => ({ role: p.label })),
      });
      location.assign(`/flows/${flow.flow_id}`);
    });
  });
}
