// The visual builder: GrapesJS with its MJML components. It edits MJML source only; the server
// compiles it (what is previewed and sent is the server's HTML, never the builder's own).
import "font-awesome/css/font-awesome.min.css"; // GrapesJS's panel icons, bundled (no CDN)
import grapesjs from "grapesjs";
import grapesJSMJML from "grapesjs-mjml";
import { formatMjml } from "./format";

// A grey box (no request to a placeholder service) until the marketer sets the image's URL.
const IMAGE_PLACEHOLDER =
  "data:image/svg+xml," +
  encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="300">' +
      '<rect width="100%" height="100%" fill="#d9dee4"/>' +
      '<text x="50%" y="50%" fill="#6b7785" font-family="sans-serif" font-size="24" ' +
      'text-anchor="middle" dominant-baseline="middle">Image: set its URL</text></svg>',
  );

const BLOCKS = [
  "mj-1-column",
  "mj-2-columns",
  "mj-3-columns",
  "mj-text",
  "mj-image",
  "mj-button",
  "mj-divider",
  "mj-spacer",
  "mj-social-group",
  "mj-social-element",
  "mj-hero",
  "mj-wrapper",
  "mj-raw",
];

// MJML allows `<mj-image ... />`; GrapesJS parses as HTML, where that tag would swallow its
// next siblings. The builder gets explicit end tags instead (the same document to MJML).
export function explicitEndTags(mjml) {
  return mjml.replace(/<(mj-[\w-]+)((?:\s+(?:[^>"']|"[^"]*"|'[^']*')*?)?)\s*\/>/g, "<$1$2></$1>");
}

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// The cursor as a count of characters into `el`'s text, and back.
function caretOffset(el) {
  const selection = el.ownerDocument.getSelection();
  if (!selection?.rangeCount || !el.contains(selection.focusNode)) return null;
  const before = el.ownerDocument.createRange();
  before.selectNodeContents(el);
  before.setEnd(selection.focusNode, selection.focusOffset);
  return before.toString().length;
}

function placeCaret(el, offset) {
  const doc = el.ownerDocument;
  const walker = doc.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  let left = offset;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (left <= node.length) {
      const range = doc.createRange();
      range.setStart(node, left);
      range.collapse(true);
      doc.getSelection().removeAllRanges();
      doc.getSelection().addRange(range);
      return;
    }
    left -= node.length;
  }
}

export class Builder {
  constructor(container, { mjml, onChange }) {
    this.onChange = onChange;
    this.loading = false;
    this.editor = grapesjs.init({
      container,
      height: "680px",
      width: "auto",
      fromElement: false,
      components: explicitEndTags(mjml),
      storageManager: false, // the form's mjml field is the storage
      cssIcons: "", // font-awesome is in the bundle: the admin loads nothing from a CDN
      assetManager: { upload: false },
      plugins: [grapesJSMJML],
      pluginsOpts: {
        [grapesJSMJML]: { blocks: BLOCKS, imagePlaceholderSrc: IMAGE_PLACEHOLDER },
      },
    });
    this.editor.on("update", () => {
      if (!this.loading) this.onChange(this.getMjml());
    });
    // Typing in a text changes only the page until its editing ends: the preview is told a
    // pause after the last keystroke, with the text written into the model first.
    this.editor.on("component:input", () => {
      clearTimeout(this.typing);
      this.typing = setTimeout(() => this.syncTyping(), 400);
    });
    // The blocks to drag in are what a new builder needs first (not the style manager).
    this.editor.onReady(() => this.editor.Panels.getButton("views", "open-blocks")?.set("active", true));
  }

  // The text toolbar of GrapesJS gets a "Variable" list: the pick is written at the cursor.
  setVariables(variables) {
    const rte = this.editor.RichTextEditor;
    rte.remove("te-variables");
    const options = variables
      .map((v) => `<option value="${escapeHtml(v.name)}">${escapeHtml(v.name)}</option>`)
      .join("");
    rte.add("te-variables", {
      name: "te-variables",
      icon: `<select class="gjs-field te-rte-variables" title="Insert a variable"><option value="">{{ }}</option>${options}</select>`,
      event: "change",
      result: (editorRte, action) => {
        const name = action.btn.firstChild.value;
        if (name) editorRte.insertHTML(`{{ ${escapeHtml(name)} }}`);
      },
      update: (editorRte, action) => {
        action.btn.firstChild.value = "";
        return 0;
      },
    });
  }

  // Writes `{{ name }}` where the cursor is in the text being edited; false when no text is.
  insertVariable(name) {
    const rte = this.editor.RichTextEditor.globalRte;
    if (!this.editor.getEditing() || !rte) return false;
    rte.insertHTML(`{{ ${escapeHtml(name)} }}`);
    return true;
  }

  async syncTyping() {
    const view = this.editor.getEditing()?.getView();
    const el = this.editor.RichTextEditor.globalRte?.el;
    if (!view?.syncContent || !el) return;
    // Writing the text into the model redraws it: the cursor is put back where it was.
    const offset = caretOffset(el);
    await view.syncContent();
    await new Promise((resolve) => setTimeout(resolve)); // the redraw happens after the sync
    if (offset !== null) placeCaret(el, offset);
    if (!this.loading) this.onChange(this.getMjml());
  }

  // Writes a text still being edited into the model at once (typing is otherwise written a
  // pause after the last keystroke): the form's submit calls it, so a quick Save keeps it.
  async flush() {
    clearTimeout(this.typing);
    const view = this.editor.getEditing()?.getView();
    if (view?.syncContent) await view.syncContent();
  }

  getMjml() {
    return formatMjml(this.editor.getHtml());
  }

  // Replaces the whole document (from the code editor); not an undoable builder change.
  setMjml(mjml) {
    this.loading = true;
    try {
      this.editor.setComponents(explicitEndTags(mjml));
      this.editor.UndoManager.clear();
    } finally {
      this.loading = false;
    }
  }

  refresh() {
    this.editor.refresh();
  }
}
