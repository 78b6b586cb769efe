// Run page, once a run has succeeded: the next step in one click. "Compute maps for the test
// split" asks for one Integrated Gradients map per test subject (POST /attributions/batch),
// follows their jobs, and lists each map with "Open in viewer" and "Compare".
import { useMemo, useState } from "react";
import { Link } from "react-router";
import { api } from "../api/client";
import type { Attribution, Job, Run } from "../api/types";
import { isActive } from "../api/types";
import { compareViewerPath, viewerPath } from "../api/urls";
import { ErrorMessage, StatusBadge } from "../components/common";
import { useAsync, useJobPolling } from "../hooks";
import { batchProgress, newestPerSubject, othersOfSubject } from "./nextSteps";

export function NextSteps({ run, writable }: { run: Run; writable: boolean }) {
  const [generation, setGeneration] = useState(0);
  const subjects = useAsync(async () => (await api.datasets.subjects(run.dataset_id)).data, [run.dataset_id]);
  // This run's maps of test subjects, and every map of those subjects (for Compare).
  const maps = useAsync(
    async () => (await api.attributions.list({ split: "test" })).data,
    [run.id, generation],
  );
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const allTestMaps = useMemo(() => maps.data ?? [], [maps.data]);
  const mine = useMemo(() => newestPerSubject(allTestMaps.filter((a) => a.run_id === run.id)), [allTestMaps, run.id]);
  const jobIds = mine.filter((a) => a.job_id != null && isActive(a.status)).map((a) => a.job_id as number);
  const jobs = useJobPolling(jobIds, () => setGeneration((g) => g + 1));
  const testSubjects = (subjects.data ?? []).filter((s) => s.split === "test");
  const names = new Map((subjects.data ?? []).map((s) => [s.id, s.subject_key]));
  const progress = batchProgress(mine, jobs);

  const compute = async () => {
    setBusy(true);
    setError(null);
    try {
      await api.attributions.createBatch({ run_id: run.id, split: "test" });
      setGeneration((g) => g + 1);
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel next-steps" data-testid="next-steps">
      <h2>Next: maps of the test split</h2>
      {testSubjects.length === 0 && subjects.data ? (
        <p className="muted">The dataset has no test subjects.</p>
      ) : null}
      {writable && testSubjects.length > 0 ? (
        <div className="row-actions">
          <button type="button" disabled={busy || progress.active > 0} onClick={() => void compute()}>
            {mine.length === 0 ? "Compute maps for the test split" : "Compute the test split's maps again"}
          </button>
          <span className="muted small">
            Integrated Gradients, one map per test subject ({testSubjects.length}), one job each.
          </span>
        </div>
      ) : null}
      {!writable && mine.length === 0 ? (
        <p className="muted">No maps of the test split yet; a researcher of the project can compute them.</p>
      ) : null}
      <ErrorMessage error={error ?? maps.error ?? subjects.error} />
      {mine.length > 0 ? (
        <>
          <div className="progress" data-testid="batch-progress" data-done={progress.done} data-total={progress.total}>
            <div
              className="progress-track"
              role="progressbar"
              aria-label="Maps of the test split"
              aria-valuemin={0}
              aria-valuemax={100}
              aria-valuenow={Math.round(progress.fraction * 100)}
            >
              <div className="progress-fill" style={{ width: `${Math.round(progress.fraction * 100)}%` }} />
            </div>
            <span className="progress-text">
              {progress.done} of {progress.total} maps computed
              {progress.failed > 0 ? ` · ${progress.failed} failed` : ""}
            </span>
          </div>
          <table className="table narrow-table next-steps-maps">
            <thead>
              <tr>
                <th>Subject</th>
                <th>Map</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {mine.map((a) => (
                <MapRow
                  key={a.id}
                  attribution={a}
                  job={a.job_id != null ? jobs[a.job_id] : undefined}
                  subjectName={names.get(a.subject_id) ?? `subject ${a.subject_id}`}
                  others={othersOfSubject(allTestMaps, a)}
                />
              ))}
            </tbody>
          </table>
        </>
      ) : null}
    </section>
  );
}

function MapRow({
  attribution,
  job,
  subjectName,
  others,
}: {
  attribution: Attribution;
  job: Job | undefined;
  subjectName: string;
  others: number[];
}) {
  const status = job && isActive(attribution.status) ? job.status : attribution.status;
  const done = attribution.status === "succeeded";
  return (
    <tr data-attribution-id={attribution.id} data-status={status}>
      <td>{subjectName}</td>
      <td>
        #{attribution.id} <StatusBadge status={status} />
      </td>
      <td className="row-actions">
        {done ? (
          <>
            <Link to={viewerPath(attribution.subject_id, attribution.id)}>Open in viewer</Link>
            <Link
              to={compareViewerPath(attribution.subject_id, [attribution.id, ...others])}
              title={others.length ? "With the subject's newest other maps" : "Add other maps of the subject there"}
            >
              Compare
            </Link>
          </>
        ) : job?.error ? (
          <span className="error small">{job.error}</span>
        ) : null}
      </td>
    </tr>
  );
}
