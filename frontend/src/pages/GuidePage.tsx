// /guide: the user guide (docs/user-guide.md, bundled at build time) inside the app, with its
// screenshots; links to other repository files show as text.
import { useMemo } from "react";
import { Link } from "react-router";
import guide from "../../../docs/user-guide.md?raw";
import { markdownToHtml } from "../guide/markdown";

// The guide's screenshots (docs/img), bundled as files; the guide names them img/<file>.
const IMAGES: Record<string, string> = Object.fromEntries(
  Object.entries(
    import.meta.glob<string>("../../../docs/img/*.png", { eager: true, query: "?url", import: "default" }),
  ).map(([path, url]) => [path.split("/").pop() as string, url]),
);

export default function GuidePage() {
  const html = useMemo(
    () =>
      markdownToHtml(guide, {
        image: (src) => IMAGES[src.split("/").pop() ?? ""] ?? null,
        link: (href) => (/^https?:\/\//.test(href) || href.startsWith("/") ? href : null),
      }),
    [],
  );
  return (
    <article className="panel guide" data-testid="user-guide">
      <p className="crumbs">
        <Link to="/">Datasets and runs</Link> / User guide · <Link to="/api">API reference</Link>
      </p>
      <div dangerouslySetInnerHTML={{ __html: html }} />
    </article>
  );
}
