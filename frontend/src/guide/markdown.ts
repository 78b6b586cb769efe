// A small Markdown-to-HTML converter for the in-app user guide (docs/user-guide.md): headings,
// paragraphs, nested ordered/unordered lists (items continue on indented lines), tables, fenced
// code, images and inline code, bold, italics and links. Every text is HTML-escaped.

const escape = (text: string) =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export interface MarkdownOptions {
  /** The URL of an image path as written in the document (img/x.png), or null to drop it. */
  image?: (src: string) => string | null;
  /** The URL of a link, or null to show the link text alone (e.g. another repository file). */
  link?: (href: string) => string | null;
}

export function inline(text: string, options: MarkdownOptions = {}): string {
  const codes: string[] = [];
  // Code spans are set aside behind a private-use character (U+E000), then put back.
  let out = text.replace(/`([^`]+)`/g, (_m, code: string) => {
    codes.push(`<code>${escape(code)}</code>`);
    return `\ue000${codes.length - 1}\ue000`;
  });
  out = escape(out);
  out = out.replace(/!\[([^\]]*)\]\(([^)\s]+)\)/g, (_m, alt: string, src: string) => {
    const url = options.image ? options.image(src) : src;
    return url ? `<img src="${escape(url)}" alt="${alt}">` : "";
  });
  out = out.replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (_m, label: string, href: string) => {
    const url = options.link ? options.link(href) : href;
    return url ? `<a href="${escape(url)}">${label}</a>` : label;
  });
  out = out.replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
  out = out.replace(/(^|[^*\w])\*([^*\s][^*]*)\*(?!\w)/g, "$1<em>$2</em>");
  return out.replace(/\ue000(\d+)\ue000/g, (_m, i: string) => codes[Number(i)]);
}

const LIST_ITEM = /^(\s*)(\d+\.|[-*])\s+(.*)$/;

function dedent(lines: string[], by: number): string[] {
  return lines.map((l) => (l.slice(0, by).trim() === "" ? l.slice(by) : l.trimStart()));
}

function table(lines: string[], options: MarkdownOptions): string {
  const cells = (l: string) =>
    l
      .trim()
      .replace(/^\||\|$/g, "")
      .split(/(?<!\\)\|/)
      .map((c) => inline(c.trim().replace(/\\\|/g, "|"), options));
  const [head, , ...body] = lines;
  return (
    `<table class="table"><thead><tr>${cells(head).map((c) => `<th>${c}</th>`).join("")}</tr></thead><tbody>` +
    body.map((r) => `<tr>${cells(r).map((c) => `<td>${c}</td>`).join("")}</tr>`).join("") +
    "</tbody></table>"
  );
}

/** The document as HTML. */
export function markdownToHtml(source: string, options: MarkdownOptions = {}): string {
  const lines = source.replace(/\r\n/g, "\n").split("\n");
  const out: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i++;
      continue;
    }
    const fence = line.match(/^\s*```/);
    if (fence) {
      const body: string[] = [];
      i++;
      while (i < lines.length && !/^\s*```/.test(lines[i])) body.push(lines[i++]);
      i++;
      out.push(`<pre><code>${escape(body.join("\n"))}</code></pre>`);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      const level = heading[1].length;
      const id = heading[2].toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
      out.push(`<h${level} id="${id}">${inline(heading[2], options)}</h${level}>`);
      i++;
      continue;
    }
    if (/^\s*\|/.test(line)) {
      const rows: string[] = [];
      while (i < lines.length && /^\s*\|/.test(lines[i])) rows.push(lines[i++]);
      out.push(table(rows, options));
      continue;
    }
    const item = line.match(LIST_ITEM);
    if (item) {
      const ordered = /\d/.test(item[2]);
      const indent = item[1].length;
      const items: string[] = [];
      while (i < lines.length) {
        const m = lines[i].match(LIST_ITEM);
        if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
        const contentIndent = indent + m[2].length + 1;
        const body = [m[3]];
        i++;
        // The item goes on while lines are indented past its marker (or blank before such a line).
        while (i < lines.length) {
          const next = lines[i];
          if (next.trim() === "") {
            const after = lines.slice(i + 1).find((l) => l.trim() !== "");
            if (after && after.length - after.trimStart().length >= contentIndent) {
              body.push("");
              i++;
              continue;
            }
            break;
          }
          if (next.length - next.trimStart().length >= Math.min(contentIndent, indent + 2)) {
            body.push(next);
            i++;
          } else break;
        }
        const [first, ...rest] = body;
        items.push(`<li>${markdownToHtml([first, ...dedent(rest, contentIndent)].join("\n"), options)}</li>`);
      }
      out.push(ordered ? `<ol>${items.join("")}</ol>` : `<ul>${items.join("")}</ul>`);
      continue;
    }
    const para: string[] = [];
    while (
      i < lines.length &&
      lines[i].trim() !== "" &&
      !/^(#{1,6})\s/.test(lines[i]) &&
      !/^\s*\|/.test(lines[i]) &&
      !/^\s*```/.test(lines[i]) &&
      !LIST_ITEM.test(lines[i])
    ) {
      para.push(lines[i++].trim());
    }
    out.push(`<p>${inline(para.join(" "), options)}</p>`);
  }
  return out.join("\n");
}
