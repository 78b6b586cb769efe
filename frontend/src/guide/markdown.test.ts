import { describe, expect, it } from "vitest";
import { inline, markdownToHtml } from "./markdown";

describe("markdownToHtml", () => {
  it("renders headings, paragraphs and inline marks, escaping text", () => {
    const html = markdownToHtml("# Guide\n\nSome **bold**, *it*, `a<b>` and [x](http://e).\nNext line.");
    expect(html).toBe(
      '<h1 id="guide">Guide</h1>\n<p>Some <strong>bold</strong>, <em>it</em>, <code>a&lt;b&gt;</code> and <a href="http://e">x</a>. Next line.</p>',
    );
  });

  it("keeps indented paragraphs, tables and images inside a numbered item", () => {
    const md = [
      "1. **Viewer**: text",
      "   more text",
      "",
      "   ![The viewer](img/v.png)",
      "",
      "   | keys | action |",
      "   |---|---|",
      "   | `p` | toggle |",
      "",
      "2. Next",
    ].join("\n");
    const html = markdownToHtml(md, { image: (src) => `/assets/${src.split("/").pop()}` });
    expect(html.startsWith("<ol><li><p><strong>Viewer</strong>: text more text</p>")).toBe(true);
    expect(html).toContain('<img src="/assets/v.png" alt="The viewer">');
    expect(html).toContain("<td><code>p</code></td><td>toggle</td>");
    expect(html).toContain("<li><p>Next</p></li></ol>");
  });

  it("shows the text of links it cannot follow", () => {
    expect(inline("see [bench](benchmarks.md)", { link: () => null })).toBe("see bench");
  });

  it("renders fenced code as it is", () => {
    expect(markdownToHtml("```sh\nmake run  # <go>\n```")).toBe("<pre><code>make run  # &lt;go&gt;</code></pre>");
  });
});
