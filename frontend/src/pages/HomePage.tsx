import { type FormEvent, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { api } from "../api/client";
import type { Dataset, Job, Project, Run } from "../api/types";
import { canWrite, isActive } from "../api/types";
import { runComparePath, runPath } from "../api/urls";
import { ErrorMessage, Field, ProgressBar, RoleBadge, StatusBadge } from "../components/common";
import { formatDate, summariseConfig, summariseMetrics } from "../format";
import {
  type DatasetFormValues,
  type FieldErrors,
  validateDatasetForm,
} from "../forms/validation";
import { useAsync, useJobPolling } from "../hooks";
import { ImportedBadge } from "../runs/ExportLinks";
import { ImportModelForm } from "../runs/ImportModelForm";
import { importSummary, isImported } from "../runs/modelImport";

/** The project filter lives in the URL (`/?project=3`), so a filtered view can be shared. */
function projectFilter(raw: string | null): number | null {
  return raw && /^\d+$/.test(raw) ? Number(raw) : null;
}

export function HomePage() {
  const [search, setSearch] = useSearchParams();
  const projectId = projectFilter(search.get("project"));
  const projects = useAsync(() => api.projects.list(), []);
  const datasets = useAsync(() => api.datasets.list(projectId), [projectId]);
  const runs = useAsync(() => api.runs.list(), []);

  const projectList = projects.data?.data ?? [];
  const selected = projectId == null ? null : (projectList.find((p) => p.id === projectId) ?? null);
  // Filter here too: the previous answer stays on screen while the next one loads.
  const datasetList = (datasets.data?.data ?? []).filter(
    (d) => projectId == null || d.project_id === projectId,
  );
  const datasetIds = new Set(datasetList.map((d) => d.id));
  const runList = (runs.data?.data ?? []).filter((r) => projectId == null || datasetIds.has(r.dataset_id));
  // Where this user may upload and launch: the selected project, or any of theirs.
  const writable = (selected ? [selected] : projectId == null ? projectList : []).filter((p) =>
    canWrite(p.role),
  );

  const writableIds = new Set(writable.map((p) => p.id));
  const writableDatasets = datasetList.filter((d) => writableIds.has(d.project_id));

  const choose = (id: number | null) => {
    const next = new URLSearchParams(search);
    if (id == null) next.delete("project");
    else next.set("project", String(id));
    setSearch(next);
  };

  return (
    <div className="home">
      <section className="panel projects-panel">
        <div className="panel-head">
          <h1>Projects</h1>
          <Field label="Project">
            <select
              name="project"
              value={projectId == null ? "" : String(projectId)}
              onChange={(e) => choose(projectFilter(e.target.value))}
            >
              <option value="">All projects</option>
              {projectList.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name}
                  {p.role ? ` (${p.role})` : ""}
                </option>
              ))}
              {projectId != null && !selected ? <option value={projectId}>Project #{projectId}</option> : null}
            </select>
          </Field>
        </div>
        <ErrorMessage error={projects.error} />
        <ProjectTable
          projects={projectList}
          selectedId={projectId}
          loading={projects.loading && !projects.data}
          onChoose={choose}
        />
      </section>
      <section className="panel">
        <h1>Datasets{selected ? <span className="muted small">in {selected.name}</span> : null}</h1>
        <ErrorMessage error={datasets.error} />
        <DatasetTable
          datasets={datasetList}
          projects={projectList}
          showProject={projectId == null && projectList.length > 1}
          loading={datasets.loading && !datasets.data}
        />
        {writable.length > 0 ? (
          <CreateDatasetForm projects={writable} onCreated={datasets.reload} />
        ) : (
          <ReadOnlyNote project={selected} projectId={projectId} loaded={!!projects.data} />
        )}
      </section>
      <section className="panel">
        <h1>Training runs{selected ? <span className="muted small">in {selected.name}</span> : null}</h1>
        <ErrorMessage error={runs.error} />
        <RunTable
          runs={runList}
          datasets={datasetList}
          loading={runs.loading && !runs.data}
          onSettled={runs.reload}
        />
        {writable.length > 0 ? (
          <>
            <p className="launch-link">
              <Link className="button-link" to="/runs/new">
                Launch a run…
              </Link>{" "}
              <span className="muted small">network, loss settings, attribution constraint, schedule and more</span>
            </p>
            {writableDatasets.length > 0 ? (
              <ImportModelForm datasets={writableDatasets} onImported={runs.reload} />
            ) : null}
          </>
        ) : null}
      </section>
    </div>
  );
}

function ReadOnlyNote({
  project,
  projectId,
  loaded,
}: {
  project: Project | null;
  projectId: number | null;
  loaded: boolean;
}) {
  if (!loaded) return null;
  let text = "None of your projects lets you upload data or launch runs; a project admin can change your role.";
  if (project) {
    text = `Your role in ${project.name} (${project.role ?? "none"}) may view and review, not upload data or launch runs.`;
  } else if (projectId != null) text = `You are not a member of project #${projectId}.`;
  return <p className="muted small read-only-note">{text}</p>;
}

function ProjectTable({
  projects,
  selectedId,
  loading,
  onChoose,
}: {
  projects: Project[];
  selectedId: number | null;
  loading: boolean;
  onChoose: (id: number | null) => void;
}) {
  if (loading) return <p className="muted">Loading projects…</p>;
  if (projects.length === 0) return <p className="muted">You are not a member of any project yet.</p>;
  return (
    <table className="table">
      <thead>
        <tr>
          <th>Project</th>
          <th>Your role</th>
          <th>Created</th>
        </tr>
      </thead>
      <tbody>
        {projects.map((p) => (
          <tr key={p.id} data-project-id={p.id} className={p.id === selectedId ? "selected" : undefined}>
            <td>
              <button
                type="button"
                className="link-button"
                aria-pressed={p.id === selectedId}
                onClick={() => onChoose(p.id === selectedId ? null : p.id)}
              >
                {p.name}
              </button>
              {p.description ? <div className="muted small">{p.description}</div> : null}
            </td>
            <td>
              <RoleBadge role={p.role} />
            </td>
            <td className="muted">{formatDate(p.created_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function DatasetTable({
  datasets,
  projects,
  showProject,
  loading,
}: {
  datasets: Dataset[];
  projects: Project[];
  showProject: boolean;
  loading: boolean;
}) {
  if (loading) return <p className="muted">Loading datasets…</p>;
  if (datasets.length === 0) return <p className="muted">No datasets yet.</p>;
  const projectName = (id: number) => projects.find((p) => p.id === id)?.name ?? `#${id}`;
  return (
    <table className="table">
      <thead>
        <tr>
          <th>Name</th>
          {showProject ? <th>Project</th> : null}
          <th className="num">Subjects</th>
          <th>Created</th>
        </tr>
      </thead>
      <tbody>
        {datasets.map((d) => (
          <tr key={d.id} data-dataset-id={d.id}>
            <td>
              <Link to={`/datasets/${d.id}`}>{d.name}</Link>
              {d.description ? <div className="muted small">{d.description}</div> : null}
            </td>
            {showProject ? <td>{projectName(d.project_id)}</td> : null}
            <td className="num">{d.subject_count ?? 0}</td>
            <td className="muted">{formatDate(d.created_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CreateDatasetForm({ projects, onCreated }: { projects: Project[]; onCreated: () => void }) {
  const only = projects.length === 1 ? projects[0] : null;
  const empty: DatasetFormValues = { name: "", description: "", projectId: "" };
  const [values, setValues] = useState<DatasetFormValues>(empty);
  const [errors, setErrors] = useState<FieldErrors<keyof DatasetFormValues>>({});
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  // With one project to choose from, it is that one; otherwise the user picks.
  const projectId = only ? String(only.id) : values.projectId;
  const chosen = projects.some((p) => String(p.id) === projectId) ? projectId : "";

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    const result = validateDatasetForm({ ...values, projectId: chosen });
    setErrors(result.ok ? {} : result.errors);
    setError(null);
    if (!result.ok) return;
    setBusy(true);
    try {
      await api.datasets.create(result.value);
      setValues({ ...empty, projectId: values.projectId });
      onCreated();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="inline-form" onSubmit={onSubmit} noValidate aria-label="Create dataset">
      <h2>New dataset{only ? <span className="muted small"> in {only.name}</span> : null}</h2>
      <div className="form-row">
        {only ? null : (
          <Field label="Project" error={errors.projectId}>
            <select
              name="project_id"
              value={chosen}
              onChange={(e) => setValues({ ...values, projectId: e.target.value })}
            >
              <option value="">Choose…</option>
              {projects.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name}
                </option>
              ))}
            </select>
          </Field>
        )}
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
  const [chosen, setChosen] = useState<number[]>([]);
  const navigate = useNavigate();
  const choose = (id: number, on: boolean) => setChosen((c) => (on ? [...c, id] : c.filter((x) => x !== id)));

  if (loading) return <p className="muted">Loading runs…</p>;
  if (runs.length === 0) return <p className="muted">No runs yet.</p>;
  return (
    <>
    <div className="form-row">
      <button
        type="button"
        className="small-button"
        disabled={chosen.length < 2}
        onClick={() => navigate(runComparePath(chosen))}
      >
        Compare selected runs ({chosen.length})
      </button>
    </div>
    <table className="table">
      <thead>
        <tr>
          <th aria-label="Select" />
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
                <input
                  type="checkbox"
                  aria-label={`Select ${run.name} for comparison`}
                  checked={chosen.includes(run.id)}
                  onChange={(e) => choose(run.id, e.target.checked)}
                />
              </td>
              <td>
                <Link to={runPath(run.id)}>{run.name}</Link>
                {isImported(run) ? (
                  <>
                    {" "}
                    <ImportedBadge />
                  </>
                ) : null}
                <div className="muted small">{isImported(run) ? importSummary(run) : summariseConfig(run.config)}</div>
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
    </>
  );
}
