// The evaluation of a finished classification run: which epoch's weights it kept and the metric
// that chose them, its metrics per split and site, and its per-subject predictions as CSV.
import { api } from "../api/client";
import type { Run } from "../api/types";
import { runPredictionsCsvUrl } from "../api/urls";
import { ErrorMessage } from "../components/common";
import { formatNumber } from "../format";
import { useAsync } from "../hooks";

export function SiteMetricsPanel({ run }: { run: Run }) {
  const classification = (run.config.task ?? "classification") === "classification";
  const ready = run.status === "succeeded" && classification;
  const sites = useAsync(async () => (ready ? api.runs.siteMetrics(run.id) : null), [run.id, ready]);
  if (!ready) return null;
  return (
    <section className="panel" data-testid="evaluation">
      <h2>Evaluation</h2>
      {run.best_epoch != null ? (
        <p data-testid="best-epoch">
          Weights of epoch {run.best_epoch}, chosen by <code>{run.best_metric ?? "the last epoch"}</code>
          {run.best_metric && run.best_metric !== run.config.early_stopping_metric ? (
            <span className="muted small">
              {" "}
              (the early-stopping metric {String(run.config.early_stopping_metric)} fell back to it)
            </span>
          ) : null}
          .
        </p>
      ) : null}
      <ErrorMessage error={sites.error} />
      {sites.data ? (
        <table className="table narrow-table" data-testid="site-metrics">
          <thead>
            <tr>
              <th>split</th>
              <th>site</th>
              <th className="num">n</th>
              <th className="num">pathological</th>
              <th className="num">AUROC</th>
              <th className="num">accuracy</th>
            </tr>
          </thead>
          <tbody>
            {sites.data.data.map((m) => (
              <tr key={`${m.split}/${m.site ?? "*"}`}>
                <td>{m.split}</td>
                <td>{m.site === null ? <em>all sites</em> : m.site || <span className="muted">none</span>}</td>
                <td className="num">{m.n}</td>
                <td className="num">{m.n_pathological}</td>
                <td className="num">{m.auroc == null ? "–" : formatNumber(m.auroc)}</td>
                <td className="num">{formatNumber(m.accuracy)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <p>
        <a href={runPredictionsCsvUrl(run.id)} download>
          Per-subject predictions (CSV)
        </a>
      </p>
    </section>
  );
}
