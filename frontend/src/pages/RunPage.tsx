import { useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import type { Job } from "../api/types";
import { canWrite, isActive } from "../api/types";
import { parseId, runPath } from "../api/urls";
import { CurveChart } from "../charts/CurveChart";
import { seriesFromPoints } from "../charts/curves";
import { ErrorMessage, ProgressBar, StatusBadge } from "../components/common";
import { fieldLabel, formatDate, formatNumber, formatValue } from "../format";
import { useAsync } from "../hooks";
import { CorrectedSubjects } from "../corrections/CorrectedSubjects";
import { FromReviewsPanel } from "../corrections/FromReviewsPanel";
import { WatchPlot } from "../corrections/WatchPlot";
import { INSTRUMENTATION_METRICS, INSTRUMENTATION_NOTE, groupsWithData, testMetrics } from "../runs/metricGroups";
import { NextSteps } from "../runs/NextSteps";
import { useLiveRun } from "../runs/useLiveRun";
import { SiteMetricsPanel } from "../runs/SiteMetricsPanel";
import { ShortcutReportPanel } from "../shortcut/ShortcutReportPanel";
import { ExportLinks, ImportedBadge } from "../runs/ExportLinks";
import { importSummary, isImported } from "../runs/modelImport";

/** /runs/:id: status, progress, live curves, cancel/retry and the final test metrics. */
export function RunPage() {
  const { runId: raw = "" } = useParams();
  let runId: number | null;
  try {
    runId = parseId(raw, "run id");
  } catch {
    runId = null;
  }
  if (runId === null) return <ErrorMessage error={`Not a valid run id: ${raw}`} />;
  // Keyed by the id: another run (a link, a run launched from reviews) starts from nothing, so
  // no curve, job, form field or panel of the previous run can show under the new id.
  return <RunView key={runId} runId={runId} />;
}

function RunView({ runId }: { runId: number }) {
  const [generation, setGeneration] = useState(0);
  const live = useLiveRun(runId, generation);
  const run = live.run;
  const dataset = useAsync(async () => (run ? api.datasets.get(run.dataset_id) : null), [run?.dataset_id]);
  const project = useAsync(
    async () => (dataset.data ? api.projects.get(dataset.data.project_id) : null),
    [dataset.data?.project_id],
  );
  const writable = canWrite(project.data?.role);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const act = async (what: "cancel" | "retry") => {
    setBusy(true);
    setError(null);
    try {
      await (what === "cancel" ? api.runs.cancel(runId) : api.runs.retry(runId));
      if (what === "retry") setGeneration((g) => g + 1);
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  // Per-epoch points only; per-step points would crowd the epoch axis.
  const epochPoints = live.points.filter((p) => p.step == null);
  const job: Job | null = live.job;
  const status = run ? (job && isActive(run.status) ? job.status : run.status) : "…";
  const active = run ? isActive(run.status) || (job != null && isActive(job.status)) : false;
  const retryable = run != null && (run.status === "failed" || run.status === "cancelled");
  const finals = testMetrics(run?.metrics);

  if (live.source === "unavailable") {
    return (
      <div className="run-page" data-run-id={runId} data-source={live.source}>
        <section className="panel">
          <p className="crumbs">
            <Link to="/">Datasets and runs</Link>
          </p>
          <h1>Run {runId}</h1>
          <p className="error" role="alert" data-testid="run-unavailable">
            {live.error}
          </p>
        </section>
      </div>
    );
  }

  return (
    <div className="run-page" data-run-id={runId} data-source={live.source}>
      <section className="panel">
        <p className="crumbs">
          <Link to="/">Datasets and runs</Link> /{" "}
          {dataset.data ? <Link to={`/datasets/${dataset.data.id}`}>{dataset.data.name}</Link> : null}
        </p>
        <h1>
          {run?.name ?? `Run ${runId}`} <StatusBadge status={status} />
          {run && isImported(run) ? (
            <>
              {" "}
              <ImportedBadge />
            </>
          ) : null}
        </h1>
        {run && isImported(run) ? (
          <p className="muted small" data-testid="import-summary">
            Imported model, not trained here: {importSummary(run)}.
          </p>
        ) : null}
        {run ? (
          <p className="muted small">
            created {formatDate(run.created_at)} · updates by {live.source}
            {run.from_reviews_of != null ? (
              <>
                {" "}
                · launched from the reviews of{" "}
                <Link to={runPath(run.from_reviews_of)} data-testid="parent-run">
                  run {run.from_reviews_of}
                </Link>
              </>
            ) : null}
          </p>
        ) : null}
        {job && active ? <ProgressBar job={job} /> : null}
        {job?.error ? <p className="error small">{job.error}</p> : null}
        {writable ? (
          <div className="row-actions">
            <button type="button" disabled={busy || !active} onClick={() => void act("cancel")}>
              Cancel
            </button>
            <button type="button" disabled={busy || !retryable} onClick={() => void act("retry")}>
              Retry
            </button>
          </div>
        ) : null}
        <ErrorMessage error={error ?? dataset.error} />
      </section>
      <section className="panel">
        <h2>Training curves</h2>
        <div className="charts">
          {groupsWithData(epochPoints.map((p) => p.name)).map((g) => (
            <CurveChart key={g.title} title={g.title} series={seriesFromPoints(epochPoints, g.names)} />
          ))}
          {epochPoints.length === 0 ? <p className="muted">No metrics yet.</p> : null}
        </div>
        {epochPoints.some((p) => INSTRUMENTATION_METRICS.includes(p.name)) ? (
          <p className="muted small" data-testid="instrumentation-note">
            {INSTRUMENTATION_NOTE}
          </p>
        ) : null}
      </section>
      <section className="panel">
        <h2>Test metrics</h2>
        {finals.classification.length + finals.attribution.length === 0 ? (
          <p className="muted">The test metrics appear when the run has finished.</p>
        ) : (
          <table className="table narrow-table" data-testid="test-metrics">
            <tbody>
              {(
                [
                  [run?.config?.task === "regression" ? "Regression" : "Classification", finals.classification],
                  ["Attribution", finals.attribution],
                ] as const
              ).map(([kind, rows]) =>
                rows.length === 0
                  ? null
                  : [
                      <tr key={kind}>
                        <th colSpan={2}>{kind}</th>
                      </tr>,
                      ...rows.map(([name, value]) => (
                        <tr key={name} data-metric={name}>
                          <td>{name.replace(/^test_/, "")}</td>
                          <td className="num">{formatNumber(value)}</td>
                        </tr>
                      )),
                    ],
              )}
            </tbody>
          </table>
        )}
      </section>
      {run ? <SiteMetricsPanel run={run} /> : null}
      {run ? <ShortcutReportPanel run={run} writable={writable} /> : null}
      {run?.status === "succeeded" ? <NextSteps run={run} writable={writable} /> : null}
      {run?.from_reviews_of != null ? <CorrectedSubjects runId={runId} refresh={run.status} /> : null}
      {run ? (
        <WatchPlot
          runId={runId}
          watch={Array.isArray(run.config.watch_subjects) ? (run.config.watch_subjects as number[]) : []}
          refresh={epochPoints.length}
        />
      ) : null}
      {run ? <FromReviewsPanel run={run} writable={writable} /> : null}
      {run ? <ExportLinks run={run} /> : null}
      {run ? (
        <section className="panel">
          <h2>Configuration</h2>
          {isImported(run) ? (
            <p className="muted small">
              The preprocessing of the imported model&apos;s input spec; the training settings below are defaults, not
              how the model was trained.
            </p>
          ) : null}
          {run.preset ? (
            <p className="muted small" data-testid="run-preset">
              Started from the preset <code>{run.preset}</code>; the values below are what the run used.
            </p>
          ) : null}
          <table className="table narrow-table">
            <tbody>
              {Object.entries(run.config).map(([key, value]) => (
                <tr key={key}>
                  <td>{fieldLabel(key)}</td>
                  <td>{formatValue(value)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ) : null}
    </div>
  );
}
