import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { parseIdList, runPath } from "../api/urls";
import { ErrorMessage, StatusBadge } from "../components/common";
import { CorrectedSubjects } from "../corrections/CorrectedSubjects";
import { formatValue } from "../format";
import { useAsync } from "../hooks";
import { CurveChart } from "../charts/CurveChart";
import { overlaySeries, runCurves } from "../runs/overlay";
import { groupsWithData } from "../runs/metricGroups";

/** /runs/compare?ids=1,2,3: configs (differences highlighted) and final metrics side by side. */
export function RunComparePage() {
  const [search] = useSearchParams();
  const ids = parseIdList(search.get("ids"));
  const comparison = useAsync(
    () => (ids.length > 0 ? api.runs.compare(ids) : Promise.resolve(null)),
    [ids.join(",")],
  );
  const data = comparison.data;
  // Every run's per-epoch series (the comparison carries them), drawn on shared charts.
  const curves = data ? runCurves(data) : null;
  if (ids.length === 0) return <p className="muted">Choose runs to compare on the home page.</p>;
  return (
    <section className="panel run-compare">
      <p className="crumbs">
        <Link to="/">Datasets and runs</Link> /
      </p>
      <h1>Compare runs</h1>
      <ErrorMessage error={comparison.error} />
      {!data ? (
        comparison.loading ? <p className="muted">Loading…</p> : null
      ) : (
        <table className="table" data-testid="run-comparison">
          <thead>
            <tr>
              <th />
              {data.runs.map((r) => (
                <th key={r.id}>
                  <Link to={runPath(r.id)}>{r.name}</Link> <StatusBadge status={r.status} />
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            <tr>
              <th colSpan={data.runs.length + 1}>Configuration ({data.differing.length} differ)</th>
            </tr>
            {data.config.map((f) => (
              <tr key={f.key} className={f.differs ? "differs" : undefined} data-config-key={f.key}>
                <td>{f.key}</td>
                {f.values.map((v, i) => (
                  <td key={i}>{formatValue(v)}</td>
                ))}
              </tr>
            ))}
            <tr>
              <th colSpan={data.runs.length + 1}>Final metrics</th>
            </tr>
            {data.metrics.map((f) => (
              <tr key={f.key} data-metric={f.key}>
                <td>{f.key}</td>
                {f.values.map((v, i) => (
                  <td key={i} className="num">
                    {formatValue(v)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {data && curves && curves.length > 0 ? (
        <section className="run-compare-curves" data-testid="run-compare-curves">
          <h2>Training curves</h2>
          <p className="muted small">One colour per run; a dashed line is the second metric of a chart.</p>
          <div className="charts">
            {groupsWithData(curves.flatMap((c) => c.points.map((p) => p.name))).map((g) => (
              <CurveChart key={g.title} title={g.title} series={overlaySeries(curves, g.names)} />
            ))}
          </div>
        </section>
      ) : null}
      {data?.runs
        .filter((r) => r.from_reviews_of != null)
        .map((r) => <CorrectedSubjects key={r.id} runId={r.id} />)}
    </section>
  );
}
