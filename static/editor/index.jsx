// The template editor (templates_app): a visual MJML builder (GrapesJS), a code editor
// (CodeMirror) for MJML or raw HTML, and the live preview with the pre-send checks.
//
// The form's own textareas stay the source of truth: the island hides them and writes every
// change back, so saving submits exactly what the editor shows, and without JavaScript the
// plain textareas still work.
import "grapesjs/dist/css/grapes.min.css";
import "./editor.css";
import { Builder } from "./builder";
import { CodeEditor, darkAdmin } from "./code";
import { Preview, describeError } from "./preview";
import { STARTER_MJML } from "./starter";

function element(tag, attributes = {}, children = []) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") el.textContent = value;
    else el.setAttribute(name, value);
  }
  el.append(...children);
  return el;
}

function variableOptions(select, variables) {
  const groups = new Map();
  for (const v of variables) {
    if (!groups.has(v.group)) groups.set(v.group, []);
    groups.get(v.group).push(v);
  }
  select.replaceChildren(element("option", { value: "", text: "Insert a variable…" }));
  for (const [group, items] of groups) {
    const optgroup = element("optgroup", { label: group });
    for (const v of items) optgroup.append(element("option", { value: v.name, text: v.name }));
    select.append(optgroup);
  }
}

// Hides a textarea the editor takes over (it stays in the form and is submitted), and its
// row unless the row shows an error from the last save (then a note says where to edit).
function replaceTextarea(textarea) {
  textarea.hidden = true;
  const row = textarea.closest(".form-row");
  if (row && !row.classList.contains("errors")) row.hidden = true;
  else textarea.after(element("p", { class: "te-edited-below", text: "Edit it in the Body editor below." }));
}

function startEditor(root, { form, preview }) {
  const areas = {
    html: form.querySelector('textarea[name="html"]'),
    mjml: form.querySelector('textarea[name="mjml"]'),
  };
  const state = {
    format: "html",
    mode: "code",
    builder: null,
    stash: { mjml: "", html: "" }, // what the other format held, kept while the page is open
  };
  if (areas.mjml && (areas.mjml.value.trim() || !areas.html.value.trim())) {
    state.format = "mjml";
    state.mode = "builder";
    if (!areas.mjml.value.trim()) areas.mjml.value = STARTER_MJML;
  }
  Object.values(areas).filter(Boolean).forEach(replaceTextarea);

  const tabs = {
    builder: element("button", { type: "button", role: "tab", "data-mode": "builder", text: "Visual builder" }),
    code: element("button", { type: "button", role: "tab", "data-mode": "code", text: "Code" }),
  };
  const format = element("select", { id: "te-format", "aria-label": "Body format" }, [
    element("option", { value: "mjml", text: "MJML (responsive, visual builder)" }),
    element("option", { value: "html", text: "Raw HTML" }),
  ]);
  if (!areas.mjml) format.disabled = true;
  const variable = element("select", { id: "te-variable", "aria-label": "Insert a variable" });
  variableOptions(variable, []);
  const hint = element("span", { class: "te-hint", role: "status" });
  const toolbar = element("div", { class: "te-toolbar" }, [
    element("div", { class: "te-tabs", role: "tablist" }, [tabs.builder, tabs.code]),
    element("label", { class: "te-label" }, ["Format ", format]),
    variable,
    hint,
  ]);
  const builderBox = element("div", { class: "te-builder", "data-testid": "builder" });
  const codeBox = element("div", { class: "te-code", "data-testid": "code-editor" });
  const errors = element("ul", { id: "te-errors", class: "te-errors", role: "alert" });
  root.querySelector(".te-body").replaceChildren(toolbar, builderBox, codeBox, errors);

  const changed = () => preview.schedule();
  const code = new CodeEditor(codeBox, { onChange: changed, label: "Template source" });
  // Save with a text still being typed in the builder: the text reaches the form first.
  let flushed = false;
  form.addEventListener("submit", (event) => {
    if (flushed || state.mode !== "builder" || !state.builder || state.format !== "mjml") return;
    event.preventDefault();
    const submitter = event.submitter;
    state.builder
      .flush()
      .catch(() => {})
      .then(() => {
        areas.mjml.value = state.builder.getMjml();
        flushed = true;
        // In a task of its own: while its submit event is being handled, a form ignores
        // another submission (and a promise settled at once still runs inside it).
        setTimeout(() => form.requestSubmit(submitter || undefined));
      });
  });

  function currentArea() {
    return state.format === "mjml" ? areas.mjml : areas.html;
  }

  function show(mode) {
    if (mode === "builder" && state.format !== "mjml") mode = "code";
    if (state.mode === "builder" && mode === "code" && state.builder) {
      areas.mjml.value = state.builder.getMjml();
    }
    state.mode = mode;
    builderBox.hidden = mode !== "builder";
    codeBox.hidden = mode !== "code";
    tabs.builder.disabled = state.format !== "mjml";
    for (const [name, tab] of Object.entries(tabs)) tab.setAttribute("aria-selected", String(name === mode));
    root.dataset.mode = mode;
    root.dataset.format = state.format;
    format.value = state.format;
    hint.textContent = "";
    if (mode === "builder") {
      if (!state.builder) {
        state.builder = new Builder(builderBox, {
          mjml: areas.mjml.value,
          onChange: (mjml) => {
            areas.mjml.value = mjml;
            changed();
          },
        });
        state.builder.setVariables(variables);
      } else {
        state.builder.setMjml(areas.mjml.value);
        state.builder.refresh();
      }
    } else {
      code.attach(currentArea());
    }
  }

  function setFormat(next) {
    if (next === state.format || !areas.mjml) return;
    if (next === "html") {
      if (state.mode === "builder" && state.builder) areas.mjml.value = state.builder.getMjml();
      state.stash.mjml = areas.mjml.value;
      areas.mjml.value = ""; // an empty MJML field: the HTML field is the body
      if (!areas.html.value.trim() && state.stash.html) areas.html.value = state.stash.html;
    } else {
      areas.mjml.value = state.stash.mjml || STARTER_MJML;
    }
    state.format = next;
    show(next === "mjml" ? "builder" : "code");
    changed();
  }

  tabs.builder.addEventListener("click", () => show("builder"));
  tabs.code.addEventListener("click", () => show("code"));
  format.addEventListener("change", () => setFormat(format.value));
  variable.addEventListener("change", () => {
    const name = variable.value;
    variable.value = "";
    if (!name) return;
    if (state.mode === "code") code.insert(`{{ ${name} }}`);
    else if (!state.builder.insertVariable(name)) {
      hint.textContent = "Double-click a text in the builder first, then pick the variable.";
    }
  });
  // The admin's theme: its toggle (data-theme), or the system's when it is on "auto".
  const followTheme = () => code.setDark(darkAdmin());
  new MutationObserver(followTheme).observe(document.documentElement, {
    attributes: true,
    attributeFilter: ["data-theme"],
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", followTheme);

  let variables = [];
  const url = root.dataset.variablesUrl;
  if (url) {
    fetch(url)
      .then((response) => (response.ok ? response.json() : { variables: [] }))
      .then((body) => {
        variables = body.variables || [];
        variableOptions(variable, variables);
        state.builder?.setVariables(variables);
      })
      .catch(() => {});
  }

  show(state.mode);
  return {
    values: () => {
      if (state.mode === "builder" && state.builder) areas.mjml.value = state.builder.getMjml();
      return {
        html: areas.html.value,
        mjml: areas.mjml ? areas.mjml.value : "",
      };
    },
    showErrors: (list) => {
      const field = state.format;
      code.showErrors(list.filter((e) => e.field === field));
      errors.replaceChildren(
        ...list.map((e) => element("li", { "data-field": e.field, text: describeError(e) })),
      );
    },
  };
}

function sendTest(url, values) {
  const post = element("form", { method: "post", action: url });
  for (const [name, value] of values) {
    const input = element("input", { type: "hidden", name });
    input.value = value;
    post.append(input);
  }
  document.body.append(post);
  post.submit();
}

function start() {
  const root = document.getElementById("template-editor");
  const previewRoot = document.getElementById("template-preview");
  if (!root || !previewRoot) return;
  const form = document.getElementById("template_form");
  // A user who may only view the template has no textareas: the saved text is previewed.
  const saved = { ...(document.getElementById("template-saved")?.dataset || {}) };
  const field = (name) => form.querySelector(`[name="${name}"]`);
  let editor = null;
  const preview = new Preview(previewRoot, {
    url: previewRoot.dataset.previewUrl,
    csrf: root.dataset.csrfToken,
    values: () => ({
      subject: field("subject")?.value ?? saved.subject ?? "",
      text: field("text")?.value ?? saved.text ?? "",
      type: field("type")?.value ?? saved.type ?? "", // the unsubscribe check is for marketing
      ...(editor ? editor.values() : { html: saved.html ?? "", mjml: saved.mjml ?? "" }),
    }),
    onErrors: (errors) => {
      editor?.showErrors(errors);
      return Boolean(editor);
    },
  });
  if (field("html")) {
    editor = startEditor(root, { form, preview });
    root.hidden = false;
  }
  for (const name of ["subject", "text"]) field(name)?.addEventListener("input", () => preview.schedule());
  field("type")?.addEventListener("change", () => preview.schedule(0));
  const testButton = document.getElementById("send-test");
  testButton?.addEventListener("click", () => sendTest(testButton.dataset.url, preview.formData()));
  previewRoot.dataset.ready = "true";
  preview.refresh();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
