// CodeMirror 6 over a form's textarea: the textarea stays in the form (hidden) and always holds
// the editor's text, so the form submits what is shown and works the same without JavaScript.
import { EditorView, basicSetup } from "codemirror";
import { Compartment, EditorState } from "@codemirror/state";
import { html } from "@codemirror/lang-html";
import { liquid } from "@codemirror/lang-liquid";
import { HighlightStyle, defaultHighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { tags } from "@lezer/highlight";
import { oneDark } from "@codemirror/theme-one-dark";

// HTML and MJML both read as HTML (MJML's tags are unknown elements to it, which is fine for
// highlighting); Liquid is highlighted inside text and attribute values.
const language = liquid({ base: html({ selfClosingTags: true }) });
// CodeMirror's default style leaves Liquid's braces and variables plain: they stand out here
// (a style of our own turns the default off, so the light theme names it again).
const liquidStyle = HighlightStyle.define([
  { tag: tags.brace, color: "#a626a4", fontWeight: "bold" },
  { tag: tags.variableName, color: "#c2410c" },
  { tag: tags.function(tags.variableName), color: "#0e7490" },
]);

const lightTheme = syntaxHighlighting(defaultHighlightStyle);

export function darkAdmin() {
  const theme = document.documentElement.dataset.theme;
  if (theme === "dark") return true;
  if (theme === "light") return false;
  return window.matchMedia("(prefers-color-scheme: dark)").matches;
}

export class CodeEditor {
  constructor(parent, { onChange, label }) {
    this.textarea = null;
    this.onChange = onChange;
    this.theme = new Compartment();
    this.view = new EditorView({
      parent,
      state: EditorState.create({
        doc: "",
        extensions: [
          basicSetup,
          language,
          syntaxHighlighting(liquidStyle),
          lintGutter(),
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ "aria-label": label }),
          this.theme.of(darkAdmin() ? oneDark : lightTheme),
          EditorView.updateListener.of((update) => {
            if (!update.docChanged || !this.textarea) return;
            this.textarea.value = update.state.doc.toString();
            this.onChange();
          }),
        ],
      }),
    });
  }

  // Edits `textarea` from now on (the HTML or the MJML field), starting from its value.
  attach(textarea) {
    this.textarea = null; // no write-back while the text is replaced
    this.view.dispatch({
      changes: { from: 0, to: this.view.state.doc.length, insert: textarea.value },
      effects: setDiagnostics(this.view.state, []).effects,
    });
    this.textarea = textarea;
  }

  setDark(dark) {
    this.view.dispatch({ effects: this.theme.reconfigure(dark ? oneDark : lightTheme) });
  }

  insert(text) {
    const { from, to } = this.view.state.selection.main;
    this.view.dispatch({
      changes: { from, to, insert: text },
      selection: { anchor: from + text.length },
    });
    this.view.focus();
  }

  // Compile and Liquid errors as marks on their lines ({line, message}; line may be null).
  showErrors(errors) {
    const doc = this.view.state.doc;
    const diagnostics = errors
      .filter((error) => error.line && error.line >= 1 && error.line <= doc.lines)
      .map((error) => {
        const line = doc.line(error.line);
        return { from: line.from, to: line.to, severity: "error", message: error.message };
      });
    this.view.dispatch(setDiagnostics(this.view.state, diagnostics));
  }
}
