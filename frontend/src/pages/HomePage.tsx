import { type FormEvent, useState } from "react";
import { Link } from "react-router";
import { api } from "../api/client";
import type { Dataset, Job, Run } from "../api/types";
import { isActive } from "../api/types";
import { ErrorMessage, Field, ProgressBar, StatusBadge } from "../components/common";
import { formatDate, summariseMetrics } from "../format";
import {
  type FieldErrors,
  RUN_FORM_DEFAULTS,
  type RunField,
  type RunFormValues,
  validateDatasetForm,
  validateRunForm,
} from "../forms/validation";
import { useAsync, useJobPolling } from "../hooks";

export function HomePage() {
  const datasets = useAsync(() => api.datasets.list(), []);
  const runs = useAsync(() => api.runs.list(), []);
  const datasetList = datasets.data?.data ?? [];
  return (
    <div className="home">
      <section className="panel">
        <h1>Datasets</h1>
        <ErrorMessage error={datasets.error} />
        <DatasetTable datasets={datasetList} loading={datasets.loading && !datasets.data} />
        <CreateDatasetForm onCreated={datasets.reload} />
      </section>
      <section className="panel">
        <h1>Training runs</h1>
        <ErrorMessage error={runs.error} />
        <RunTable
          runs={runs.data?.data ?? []}
          datasets={datasetList}
          loading={runs.loading && !runs.data}
          onSettled={runs.reload}
        />
        <LaunchRunForm datasets={datasetList} onLaunched={runs.reload} />
      </section>
    </div>
  );
}

function DatasetTable({ datasets, loading }: { datasets: Dataset[]; loading: boolean }) {
  if (loading) return <p className="muted">Loading datasets…</p>;
  if (datasets.length === 0) return <p className="muted">No datasets yet.</p>;
  return (
    <table className="table">
      <thead>
        <tr>
          <th>Name</th>
          <th className="num">Subjects</th>
          <th>Created</th>
        </tr>
      </thead>
      <tbody>
        {datasets.map((d) => (
          <tr key={d.id}>
            <td>
              <Link to={`/datasets/${d.id}`}>{d.name}</Link>
              {d.description ? <div className="muted small">{d.description}</div> : null}
            </td>
            <td className="num">{d.subject_count}</td>
            <td className="muted">{formatDate(d.created_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CreateDatasetForm({ onCreated }: { onCreated: () => void }) {
  const [values, setValues] = useState({ name: "", description: "" });
  const [errors, setErrors] = useState<FieldErrors<"name" | "description">>({});
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    const result = validateDatasetForm(values);
    setErrors(result.ok ? {} : result.errors);
    setError(null);
    if (!result.ok) return;
    setBusy(true);
    try {
      await api.datasets.create(result.value);
      setValues({ name: "", description: "" });
      onCreated();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="inline-form" onSubmit={onSubmit} noValidate aria-label="Create dataset">
      <h2>New dataset</h2>
      <div className="form-row">
        <Field label="Name" error={errors.name}>
          <input
            name="name"
            value={values.name}
            onChange={(e) => setValues({ ...values, name: e.target.value })}
          />
        </Field>
        <Field label="Description">
          <input
            name="description"
            value={values.description}
            onChange={(e) => setValues({ ...values, description: e.target.value })}
          />
        </Field>
        <button type="submit" disabled={busy}>
          Create
        </button>
      </div>
      <ErrorMessage error={error} />
    </form>
  );
}

function RunTable({
  runs,
  datasets,
  loading,
  onSettled,
}: {
  runs: Run[];
  datasets: Dataset[];
  loading: boolean;
  onSettled: () => void;
}) {
  const activeJobIds = runs
    .filter((r) => isActive(r.status) && r.job_id != null)
    .map((r) => r.job_id as number);
  const jobs = useJobPolling(activeJobIds, onSettled);
  const datasetName = (id: number) => datasets.find((d) => d.id === id)?.name ?? `#${id}`;

  if (loading) return <p className="muted">Loading runs…</p>;
  if (runs.length === 0) return <p className="muted">No runs yet.</p>;
  return (
    <table className="table">
      <thead>
        <tr>
          <th>Run</th>
          <th>Dataset</th>
          <th>Status</th>
          <th>Metrics</th>
        </tr>
      </thead>
      <tbody>
        {runs.map((run) => {
          const job: Job | undefined = run.job_id != null ? jobs[run.job_id] : undefined;
          const status = job && isActive(run.status) ? job.status : run.status;
          return (
            <tr key={run.id} data-run-id={run.id}>
              <td>
                {run.name}
                <div className="muted small">
                  {run.config.epochs} epochs · batch {run.config.batch_size} · lr{" "}
                  {run.config.learning_rate} · seed {run.config.seed}
                </div>
              </td>
              <td>{datasetName(run.dataset_id)}</td>
              <td>
                <StatusBadge status={status} />
                {job && isActive(job.status) ? <ProgressBar job={job} /> : null}
                {job?.error ? <div className="error small">{job.error}</div> : null}
              </td>
              <td>
                {summariseMetrics(run.metrics).map((m) => (
                  <div key={m}>{m}</div>
                ))}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function LaunchRunForm({ datasets, onLaunched }: { datasets: Dataset[]; onLaunched: () => void }) {
  const [values, setValues] = useState<RunFormValues>(RUN_FORM_DEFAULTS);
  const [errors, setErrors] = useState<FieldErrors<RunField>>({});
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const set = (field: RunField) => (e: { target: { value: string } }) =>
    setValues({ ...values, [field]: e.target.value });

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    const result = validateRunForm(values);
    setErrors(result.ok ? {} : result.errors);
    setError(null);
    if (!result.ok) return;
    setBusy(true);
    try {
      await api.runs.create(result.value);
      setValues({ ...values, name: "" });
      onLaunched();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="inline-form" onSubmit={onSubmit} noValidate aria-label="Launch run">
      <h2>Launch a run</h2>
      <div className="form-grid">
        <Field label="Dataset" error={errors.datasetId}>
          <select name="dataset" value={values.datasetId} onChange={set("datasetId")}>
            <option value="">Choose…</option>
            {datasets.map((d) => (
              <option key={d.id} value={d.id}>
                {d.name}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Name" error={errors.name}>
          <input name="name" value={values.name} onChange={set("name")} />
        </Field>
        <Field label="Epochs" error={errors.epochs}>
          <input name="epochs" inputMode="numeric" value={values.epochs} onChange={set("epochs")} />
        </Field>
        <Field label="Batch size" error={errors.batchSize}>
          <input
            name="batch_size"
            inputMode="numeric"
            value={values.batchSize}
            onChange={set("batchSize")}
          />
        </Field>
        <Field label="Learning rate" error={errors.learningRate}>
          <input
            name="learning_rate"
            inputMode="decimal"
            value={values.learningRate}
            onChange={set("learningRate")}
          />
        </Field>
        <Field label="Seed" error={errors.seed}>
          <input name="seed" inputMode="numeric" value={values.seed} onChange={set("seed")} />
        </Field>
      </div>
      <ErrorMessage error={error} />
      <button type="submit" disabled={busy}>
        {busy ? "Launching…" : "Launch run"}
      </button>
    </form>
  );
}
