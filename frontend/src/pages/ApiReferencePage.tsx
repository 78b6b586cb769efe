// /api: the REST API's operations from the OpenAPI document, inside the app. FastAPI's /docs
// page loads Swagger UI from a CDN, which the app's Content-Security-Policy (and an offline
// lab) does not allow; the raw document is linked for tools.
import { Link } from "react-router";
import doc from "../../openapi.json";
import { operationsByTag } from "../guide/apiReference";

export default function ApiReferencePage() {
  const groups = operationsByTag(doc as never);
  const count = groups.reduce((n, [, rows]) => n + rows.length, 0);
  return (
    <article className="panel guide api-reference" data-testid="api-reference">
      <p className="crumbs">
        <Link to="/">Datasets and runs</Link> / API reference · <Link to="/guide">User guide</Link>
      </p>
      <h1>REST API</h1>
      <p>
        {count} operations under <code>/api/v1</code>. Scripts log in with a personal token (
        <code>Authorization: Bearer …</code>); the machine-readable document is{" "}
        <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>, and the repository's <code>docs/api-guide.md</code>{" "}
        walks through the common tasks and the <code>attrivue-client</code> command line.
      </p>
      {groups.map(([tag, rows]) => (
        <section key={tag}>
          <h2 id={tag}>{tag}</h2>
          <table className="table">
            <tbody>
              {rows.map((r) => (
                <tr key={`${r.method} ${r.path}`} data-operation={r.operationId}>
                  <td className="api-method">{r.method}</td>
                  <td>
                    <code>{r.path}</code>
                  </td>
                  <td>
                    {r.description || r.summary} <span className="muted small">({r.operationId})</span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </article>
  );
}
