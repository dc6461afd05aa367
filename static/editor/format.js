// GrapesJS exports MJML on one line; the code editor shows it indented, one element a line.
// Only whitespace between structural elements changes (MJML ignores it); the content of
// elements that hold HTML or text (mj-text, mj-button, mj-raw...) is kept exactly as it is.

const CONTENT_ELEMENTS = new Set([
  "mj-text",
  "mj-button",
  "mj-raw",
  "mj-table",
  "mj-style",
  "mj-title",
  "mj-preview",
  "mj-navbar-link",
  "mj-social-element",
  "mj-accordion-title",
  "mj-accordion-text",
]);
const TAG = /<(\/?)(mjml|mj-[\w-]+)((?:[^>"']|"[^"]*"|'[^']*')*)>/g;

export function formatMjml(source, indent = "  ") {
  const lines = [];
  let depth = 0;
  let position = 0;
  TAG.lastIndex = 0;
  const text = (from, to) => {
    const between = source.slice(from, to).trim();
    if (between) lines.push(indent.repeat(depth) + between); // e.g. a Liquid tag between sections
  };
  for (let match = TAG.exec(source); match; match = TAG.exec(source)) {
    const [tag, closing, name, rest] = match;
    text(position, match.index);
    position = match.index + tag.length;
    if (closing) {
      depth = Math.max(0, depth - 1);
      lines.push(indent.repeat(depth) + tag);
      continue;
    }
    if (rest.trim().endsWith("/")) {
      lines.push(indent.repeat(depth) + tag);
      continue;
    }
    if (CONTENT_ELEMENTS.has(name)) {
      const end = source.indexOf(`</${name}>`, position);
      if (end === -1) break; // not well formed: leave the rest as it is
      lines.push(indent.repeat(depth) + source.slice(match.index, end + name.length + 3));
      position = end + name.length + 3;
      TAG.lastIndex = position;
      continue;
    }
    const empty = new RegExp(`^\\s*</${name}>`).exec(source.slice(position));
    if (empty) {
      lines.push(indent.repeat(depth) + tag + empty[0].trim()); // <mj-divider></mj-divider>
      position += empty[0].length;
      TAG.lastIndex = position;
      continue;
    }
    lines.push(indent.repeat(depth) + tag);
    depth += 1;
  }
  const rest = source.slice(position).trim();
  if (rest) lines.push(rest);
  return lines.join("\n");
}
