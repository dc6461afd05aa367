// The preview: the server renders the editor's unsaved text (for sample data or a contact) and
// answers with the HTML, the text part, the pre-send checks and any compile or Liquid errors.
// The HTML is shown in an iframe sandboxed without scripts (srcdoc), at desktop or phone width,
// light or dark.

export const WIDTHS = { desktop: 680, phone: 375 };

// Dark mode, as mail clients do it. An email with its own dark styles
// (`@media (prefers-color-scheme: dark)`) gets them, as Apple Mail and Outlook for Mac apply
// them: the query is rewritten to one that always matches (a script-less iframe can not be told
// the reader prefers dark, and Chromium asks the page's own setting, not the iframe's), and
// `color-scheme: dark` darkens what the email leaves to the client. An email without any gets
// the full inversion Gmail's and Outlook's apps apply: colours inverted, images kept as they are.
export function darkened(html) {
  const ownDark = /prefers-color-scheme\s*:\s*dark/i.test(html);
  const body = html
    .replace(/\(\s*prefers-color-scheme\s*:\s*dark\s*\)/gi, "(min-width: 0px)")
    .replace(/\(\s*prefers-color-scheme\s*:\s*light\s*\)/gi, "(max-width: 0px)");
  const style = ownDark
    ? ":root { color-scheme: dark; }"
    : "html { background: #fff; filter: invert(1) hue-rotate(180deg); }" +
      " img, video, picture, [background] { filter: invert(1) hue-rotate(180deg); }";
  const tag = `<style data-preview="dark">${style}</style>`;
  return /<\/head>/i.test(body) ? body.replace(/<\/head>/i, `${tag}</head>`) : tag + body;
}

// "line 3: ..." in the older {field: message} answers.
function lineOf(message) {
  const match = /^line (\d+)\b/.exec(message || "");
  return match ? Number(match[1]) : null;
}

// The endpoint's errors, as [{field, line, message}] (a list, or the older {field: message}).
export function errorList(errors) {
  if (!errors) return [];
  if (Array.isArray(errors)) {
    return errors.map((e) =>
      typeof e === "string"
        ? { field: "", line: lineOf(e), message: e }
        : { field: e.field || "", line: e.line ?? lineOf(e.message), message: e.message || "" },
    );
  }
  return Object.entries(errors).map(([field, message]) => ({
    field,
    line: lineOf(String(message)),
    message: String(message),
  }));
}

const FIELD_NAMES = { mjml: "MJML", html: "HTML", subject: "Subject", text: "Text part", template: "" };

// "MJML: MJML error, line 4: ...": the field, and the line when the words do not say it.
export function describeError(e) {
  const where = e.line && !/\bline \d+/.test(e.message) ? `line ${e.line}: ` : "";
  const field = FIELD_NAMES[e.field] ?? e.field;
  return `${field ? `${field}: ` : ""}${where}${e.message}`;
}

// Checks as [{level, message}] whatever their exact shape.
export function checkList(checks) {
  return (checks || []).map((c) =>
    typeof c === "string"
      ? { level: "warning", code: "", message: c }
      : {
          level: c.level || c.severity || "warning",
          code: c.code || c.id || "",
          message: c.message || c.text || String(c.code || ""),
        },
  );
}

export class Preview {
  constructor(root, { url, csrf, values, onErrors }) {
    this.url = url;
    this.csrf = csrf;
    this.values = values; // () => {subject, html, text, mjml}
    this.onErrors = onErrors;
    this.frame = root.querySelector("#preview-frame");
    this.subject = root.querySelector("#preview-subject");
    this.text = root.querySelector("#preview-text");
    this.problems = root.querySelector("#preview-errors");
    this.checks = root.querySelector("#preview-checks");
    this.stale = root.querySelector("#preview-stale");
    this.contact = root.querySelector("#preview-contact");
    this.sample = root.querySelector("#preview-sample");
    this.width = "desktop";
    this.dark = false;
    this.html = "";
    this.timer = null;
    this.sequence = 0;
    for (const input of [this.contact, this.sample]) {
      input.addEventListener("input", () => this.schedule());
    }
    for (const button of root.querySelectorAll("[data-preview-width]")) {
      button.addEventListener("click", () => this.setWidth(button.dataset.previewWidth));
    }
    for (const button of root.querySelectorAll("[data-preview-theme]")) {
      button.addEventListener("click", () => this.setDark(button.dataset.previewTheme === "dark"));
    }
    this.root = root;
    this.setWidth("desktop");
    this.setDark(false);
  }

  formData() {
    const data = new FormData();
    for (const [name, value] of Object.entries(this.values())) data.append(name, value);
    data.append("contact", this.contact.value);
    data.append("sample", this.sample.value);
    data.append("csrfmiddlewaretoken", this.csrf);
    return data;
  }

  schedule(delay = 350) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delay);
  }

  async refresh() {
    clearTimeout(this.timer);
    const mine = ++this.sequence;
    this.root.dataset.state = "loading";
    let status;
    let body;
    try {
      const response = await fetch(this.url, { method: "POST", body: this.formData() });
      status = response.status;
      body = await response.json();
    } catch (exc) {
      body = { errors: [{ field: "", line: null, message: `The preview failed: ${exc}` }] };
    }
    if (mine !== this.sequence) return; // a newer request was sent meanwhile
    this.show(body, status);
  }

  show(body, status) {
    const errors = errorList(body.errors);
    if (!errors.length && status && status >= 400) {
      errors.push({ field: "", line: null, message: body.error || `The preview failed (${status}).` });
    }
    // The editor shows errors beside the source (and marks their lines); a read-only page
    // has no editor, so they are listed here.
    const controls = errors.filter((e) => e.field === "contact" || e.field === "sample");
    const shownByEditor = this.onErrors(errors.filter((e) => !controls.includes(e)));
    this.problems.replaceChildren(
      ...(shownByEditor ? controls : errors).map((e) => {
        const li = document.createElement("li");
        li.textContent = describeError(e);
        return li;
      }),
    );
    this.stale.hidden = !errors.length || !this.html;
    this.showChecks(checkList(body.checks));
    if (body.html !== undefined && !errors.length) {
      this.html = body.html;
      this.subject.textContent = body.subject;
      this.text.textContent = body.text;
      this.render();
    }
    this.root.dataset.state = errors.length ? "error" : "ready";
  }

  showChecks(checks) {
    this.checks.replaceChildren(
      ...checks.map((c) => {
        const li = document.createElement("li");
        li.className = `te-check te-check-${c.level}`;
        li.dataset.code = c.code;
        li.textContent = c.message;
        return li;
      }),
    );
    this.checks.hidden = !checks.length;
  }

  render() {
    this.frame.srcdoc = this.dark ? darkened(this.html) : this.html;
  }

  setWidth(width) {
    this.width = width;
    this.frame.style.width = `${WIDTHS[width]}px`;
    this.frame.dataset.width = width;
    for (const b of this.root.querySelectorAll("[data-preview-width]")) {
      b.setAttribute("aria-pressed", String(b.dataset.previewWidth === width));
    }
  }

  setDark(dark) {
    this.dark = dark;
    this.frame.dataset.theme = dark ? "dark" : "light";
    for (const b of this.root.querySelectorAll("[data-preview-theme]")) {
      b.setAttribute("aria-pressed", String((b.dataset.previewTheme === "dark") === dark));
    }
    if (this.html) this.render();
  }
}
