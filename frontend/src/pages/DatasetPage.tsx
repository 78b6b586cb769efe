import { type FormEvent, useRef, useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import type { Attribution, Label, Run, Split, Subject } from "../api/types";
import { SPLITS, canWrite, isActive } from "../api/types";
import { compareViewerPath, parseId, viewerPath } from "../api/urls";
import { ErrorMessage, Field, ProgressBar, StatusBadge } from "../components/common";
import { formatNumber, labelName } from "../format";
import {
  type FieldErrors,
  IG_STEPS,
  type UploadFormValues,
  igParams,
  validateUploadForm,
} from "../forms/validation";
import { useAsync, useJobPolling } from "../hooks";
import { parseTarget, validateSite } from "../components/subjectFields";
import { BulkUpload } from "../upload/BulkUpload";
import { SubjectPreview } from "../viewer/SubjectPreview";

export function DatasetPage() {
  const { datasetId = "" } = useParams();
  const dataset = useAsync(async () => api.datasets.get(parseId(datasetId, "dataset id")), [datasetId]);
  const subjects = useAsync(
    async () => api.datasets.subjects(parseId(datasetId, "dataset id")),
    [datasetId],
  );
  const runs = useAsync(
    async () => api.runs.list({ dataset_id: parseId(datasetId, "dataset id"), status: "succeeded" }),
    [datasetId],
  );
  const projectId = dataset.data?.project_id;
  const project = useAsync(
    async () => (projectId == null ? null : api.projects.get(projectId)),
    [projectId],
  );
  // Clinicians review; only admins and researchers upload and compute (the backend says 403 too).
  const writable = canWrite(project.data?.role);
  const succeededRuns = (runs.data?.data ?? []).filter(
    (r) => String(r.dataset_id) === datasetId && r.status === "succeeded",
  );
  const [runId, setRunId] = useState("");
  const [steps, setSteps] = useState(String(IG_STEPS.default));
  // Percent of |F(x) − F(x′)|; when given, the worker chooses the points (params.target_delta).
  const [target, setTarget] = useState("");
  const selectedRun = succeededRuns.find((r) => String(r.id) === runId) ?? succeededRuns[0];

  return (
    <div className="dataset">
      <section className="panel">
        <p className="crumbs">
          <Link to="/">Datasets</Link> /{" "}
          {project.data ? (
            <>
              <Link to={`/?project=${project.data.id}`}>{project.data.name}</Link> /
            </>
          ) : null}
        </p>
        <h1>{dataset.data?.name ?? `Dataset ${datasetId}`}</h1>
        {dataset.data?.description ? <p className="muted">{dataset.data.description}</p> : null}
        {project.data && !writable ? (
          <p className="muted small">
            Your role in {project.data.name} ({project.data.role ?? "none"}) may view and review, not upload
            subjects or compute attributions.
          </p>
        ) : null}
        <ErrorMessage error={dataset.error ?? subjects.error ?? runs.error ?? project.error} />
        <div className="form-row ig-controls">
          <Field label="Run for attributions">
            <select
              name="run"
              value={selectedRun ? String(selectedRun.id) : ""}
              onChange={(e) => setRunId(e.target.value)}
              disabled={succeededRuns.length === 0}
            >
              {succeededRuns.length === 0 ? <option value="">No succeeded run yet</option> : null}
              {succeededRuns.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.name} (#{r.id})
                </option>
              ))}
            </select>
          </Field>
          {writable ? (
            <>
              <Field label="IG steps">
                <input
                  name="steps"
                  inputMode="numeric"
                  value={steps}
                  onChange={(e) => setSteps(e.target.value)}
                  className="narrow"
                  disabled={target.trim() !== ""}
                />
              </Field>
              <Field label="or target δ (%)">
                <input
                  name="target_delta"
                  inputMode="decimal"
                  placeholder="e.g. 1"
                  title="Completeness delta to reach, in percent of |F(x) − F(x′)|: the worker chooses the number of points"
                  value={target}
                  onChange={(e) => setTarget(e.target.value)}
                  className="narrow"
                />
              </Field>
              <span className="muted small">Integrated gradients, zero baseline</span>
            </>
          ) : null}
        </div>
        <SubjectTable
          subjects={subjects.data?.data ?? []}
          loading={subjects.loading && !subjects.data}
          run={selectedRun}
          steps={steps}
          targetDelta={target}
          canCompute={writable}
          onEdited={subjects.reload}
          targetName={dataset.data?.target_name ?? ""}
        />
      </section>
      {writable && projectId != null ? (
        <section className="panel">
          <BulkUpload datasetId={parseId(datasetId, "dataset id")} projectId={projectId} onImported={subjects.reload} />
        </section>
      ) : null}
      {writable ? (
        <section className="panel">
          <UploadSubjectForm
            datasetId={datasetId}
            onUploaded={subjects.reload}
            targetName={dataset.data?.target_name ?? ""}
          />
        </section>
      ) : null}
    </div>
  );
}

function SubjectTable({
  subjects,
  loading,
  run,
  steps,
  targetDelta,
  canCompute,
  onEdited,
  targetName,
}: {
  /** The dataset's name for the continuous target (regression runs), "" when unnamed. */
  targetName: string;
  subjects: Subject[];
  loading: boolean;
  run: Run | undefined;
  steps: string;
  /** Target completeness delta in percent, "" for fixed steps. */
  targetDelta: string;
  /** False for clinicians: the Compute button is hidden. */
  canCompute: boolean;
  /** Called after a label or split was changed inline. */
  onEdited?: () => void;
}) {
  const attributions = useAsync(
    () => (run ? api.attributions.list({ run_id: run.id }) : Promise.resolve(null)),
    [run?.id],
  );
  const [stepsError, setStepsError] = useState<string>();
  // One preview at a time: one WebGL context, released when the preview closes.
  const [previewId, setPreviewId] = useState<number | null>(null);
  const [rowErrors, setRowErrors] = useState<Record<number, unknown>>({});
  const [created, setCreated] = useState<Record<number, Attribution>>({});
  const [edited, setEdited] = useState<Record<number, Subject>>({});
  const [saving, setSaving] = useState<Record<number, boolean>>({});
  // Several maps at once (POST /attributions/batch): the ticked subjects, or a whole split.
  const [selected, setSelected] = useState<ReadonlySet<number>>(new Set());
  const [batchSplit, setBatchSplit] = useState<Split>("test");
  const [batchBusy, setBatchBusy] = useState(false);
  const [batchError, setBatchError] = useState<unknown>(null);
  const [batchDone, setBatchDone] = useState<string | null>(null);
  const activeJobs = Object.values(created)
    .filter((a) => isActive(a.status) && a.job_id != null)
    .map((a) => a.job_id as number);
  const jobs = useJobPolling(activeJobs, attributions.reload);

  if (loading) return <p className="muted">Loading subjects…</p>;
  if (subjects.length === 0) {
    return <p className="muted">{canCompute ? "No subjects yet: upload one below." : "No subjects yet."}</p>;
  }

  // The newest attribution of the chosen run for each subject.
  const latest = new Map<number, Attribution>();
  const known = [...(attributions.data?.data ?? []), ...Object.values(created)];
  for (const a of known) {
    if (run && a.run_id !== run.id) continue;
    const before = latest.get(a.subject_id);
    if (!before || a.id > before.id) latest.set(a.subject_id, a);
  }

  const compute = async (subject: Subject) => {
    if (!run) return;
    const parsed = igParams(steps, targetDelta);
    setStepsError(typeof parsed === "string" ? parsed : undefined);
    if (typeof parsed === "string") return;
    setRowErrors((e) => ({ ...e, [subject.id]: null }));
    try {
      const attribution = await api.attributions.create({
        run_id: run.id,
        subject_id: subject.id,
        method: "integrated_gradients",
        params: parsed,
      });
      setCreated((c) => ({ ...c, [attribution.id]: attribution }));
    } catch (reason) {
      setRowErrors((e) => ({ ...e, [subject.id]: reason }));
    }
  };

  const computeBatch = async (target: { subject_ids: number[] } | { split: Split }) => {
    if (!run) return;
    const parsed = igParams(steps, targetDelta);
    setStepsError(typeof parsed === "string" ? parsed : undefined);
    if (typeof parsed === "string") return;
    setBatchBusy(true);
    setBatchError(null);
    setBatchDone(null);
    try {
      const made = await api.attributions.createBatch({
        run_id: run.id,
        method: "integrated_gradients",
        params: parsed,
        ...target,
      });
      setCreated((c) => ({ ...c, ...Object.fromEntries(made.data.map((a) => [a.id, a])) }));
      setSelected(new Set());
      setBatchDone(
        `Queued ${made.count} map${made.count === 1 ? "" : "s"}` +
          ("split" in target ? ` for the ${target.split} split.` : " for the selected subjects."),
      );
    } catch (reason) {
      setBatchError(reason);
    } finally {
      setBatchBusy(false);
    }
  };
  const toggle = (id: number, on: boolean) =>
    setSelected((old) => {
      const next = new Set(old);
      if (on) next.add(id);
      else next.delete(id);
      return next;
    });
  const splitCount = subjects.filter((x) => x.split === batchSplit).length;

  const edit = async (
    subject: Subject,
    change: { label?: Label; split?: Split; site?: string; target?: number | null },
  ) => {
    setRowErrors((e) => ({ ...e, [subject.id]: null }));
    setSaving((b) => ({ ...b, [subject.id]: true }));
    try {
      const updated = await api.subjects.update(subject.id, change);
      setEdited((e) => ({ ...e, [subject.id]: updated }));
      onEdited?.();
    } catch (reason) {
      setRowErrors((e) => ({ ...e, [subject.id]: reason }));
    } finally {
      setSaving((b) => ({ ...b, [subject.id]: false }));
    }
  };

  const previewListed = subjects.find((s) => s.id === previewId);
  const previewSubject = previewListed ? (edited[previewListed.id] ?? previewListed) : null;
  const closePreview = () => setPreviewId(null);

  return (
    <>
      {stepsError ? <p className="error">{stepsError}</p> : null}
      <ErrorMessage error={attributions.error} />
      {previewSubject ? (
        <SubjectPreview key={previewSubject.id} subject={previewSubject} onClose={closePreview} />
      ) : null}
      {canCompute ? (
        <div className="batch-bar" data-testid="batch-bar">
          <button
            type="button"
            disabled={!run || batchBusy || selected.size === 0}
            onClick={() => void computeBatch({ subject_ids: [...selected] })}
          >
            Compute IG for {selected.size} selected
          </button>
          <span className="muted">or for a split:</span>
          <select
            name="batch-split"
            aria-label="Split to compute"
            value={batchSplit}
            onChange={(e) => setBatchSplit(e.target.value as Split)}
          >
            {SPLITS.map((split) => (
              <option key={split} value={split}>
                {split}
              </option>
            ))}
          </select>
          <button
            type="button"
            disabled={!run || batchBusy || splitCount === 0}
            onClick={() => void computeBatch({ split: batchSplit })}
          >
            Compute IG for the {batchSplit} split ({splitCount})
          </button>
          {batchDone ? (
            <span className="ok" role="status">
              {batchDone}
            </span>
          ) : null}
          {!run ? <span className="muted small">Choose a finished run first.</span> : null}
        </div>
      ) : null}
      <ErrorMessage error={batchError} />
      <table className="table">
        <thead>
          <tr>
            {canCompute ? (
              <th>
                <input
                  type="checkbox"
                  aria-label="Select all subjects"
                  checked={selected.size === subjects.length}
                  onChange={(e) => setSelected(new Set(e.target.checked ? subjects.map((x) => x.id) : []))}
                />
              </th>
            ) : null}
            <th>Subject</th>
            <th>Label</th>
            <th>Split</th>
            <th>Site</th>
            <th title="The continuous target of regression runs">{targetName ? `Target (${targetName})` : "Target"}</th>
            <th>Mask</th>
            <th title="given: the uploaded brain mask; computed: from the image at import">Brain mask</th>
            <th>Shape</th>
            <th>Attribution{run ? ` (${run.name})` : ""}</th>
          </tr>
        </thead>
        <tbody>
          {subjects.map((listed) => {
            // An edit shows at once, from the server's answer.
            const s = edited[listed.id] ?? listed;
            const attribution = latest.get(s.id);
            const job = attribution?.job_id != null ? jobs[attribution.job_id] : undefined;
            const status = job ?? attribution;
            return (
              <tr key={s.id} data-subject-id={s.id}>
                {canCompute ? (
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Select ${s.subject_key}`}
                      checked={selected.has(s.id)}
                      onChange={(e) => toggle(s.id, e.target.checked)}
                    />
                  </td>
                ) : null}
                <td>
                  <Link to={viewerPath(s.id, attribution?.status === "succeeded" ? attribution.id : null)}>
                    {s.subject_key}
                  </Link>
                </td>
                <td>
                  {canCompute ? (
                    <select
                      className="subject-edit"
                      name={`label-${s.id}`}
                      aria-label={`Label of ${s.subject_key}`}
                      value={String(s.label)}
                      disabled={saving[s.id]}
                      onChange={(e) => void edit(s, { label: Number(e.target.value) as Label })}
                    >
                      <option value="0">{labelName(0)}</option>
                      <option value="1">{labelName(1)}</option>
                    </select>
                  ) : (
                    <span className={`label label-${s.label}`}>{labelName(s.label)}</span>
                  )}
                </td>
                <td>
                  {canCompute ? (
                    <select
                      className="subject-edit"
                      name={`split-${s.id}`}
                      aria-label={`Split of ${s.subject_key}`}
                      value={s.split}
                      disabled={saving[s.id]}
                      onChange={(e) => void edit(s, { split: e.target.value as Split })}
                    >
                      {SPLITS.map((split) => (
                        <option key={split} value={split}>
                          {split}
                        </option>
                      ))}
                    </select>
                  ) : (
                    s.split
                  )}
                </td>
                <td>
                  {canCompute ? (
                    <SiteCell subject={s} saving={saving[s.id] ?? false} onSave={(site) => edit(s, { site })} />
                  ) : (
                    s.site || <span className="muted">–</span>
                  )}
                </td>
                <td>
                  {canCompute ? (
                    <TargetCell subject={s} saving={saving[s.id] ?? false} onSave={(target) => edit(s, { target })} />
                  ) : s.target == null ? (
                    <span className="muted">–</span>
                  ) : (
                    formatNumber(s.target)
                  )}
                </td>
                <td>{s.has_mask ? "yes" : "–"}</td>
                <td className="muted">{s.brain_mask ?? "–"}</td>
                <td className="muted">{s.shape.join(" × ")}</td>
                <td>
                  <div className="row-actions">
                    {status ? <StatusBadge status={status.status} /> : null}
                    {attribution?.status === "succeeded" || job?.status === "succeeded" ? (
                      <Link to={viewerPath(s.id, attribution?.id)}>View</Link>
                    ) : null}
                    <button
                      type="button"
                      className="small-button"
                      aria-pressed={previewId === s.id}
                      aria-label={`Preview ${s.subject_key}`}
                      onClick={() => setPreviewId(previewId === s.id ? null : s.id)}
                    >
                      {previewId === s.id ? "Hide preview" : "Preview"}
                    </button>
                    <Link to={compareViewerPath(s.id)} title="Choose maps of this subject to compare side by side">
                      Compare maps
                    </Link>
                    {canCompute ? (
                      <button
                        type="button"
                        className="small-button"
                        disabled={!run || (status ? isActive(status.status) : false)}
                        onClick={() => void compute(s)}
                      >
                        Compute IG
                      </button>
                    ) : null}
                  </div>
                  {job && isActive(job.status) ? <ProgressBar job={job} /> : null}
                  {job?.error ? <div className="error small">{job.error}</div> : null}
                  <ErrorMessage error={rowErrors[s.id]} />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

/** The site as a text field: saved on Enter or when the field loses focus, checked first. */
function SiteCell({
  subject,
  saving,
  onSave,
}: {
  subject: Subject;
  saving: boolean;
  onSave: (site: string) => Promise<void>;
}) {
  const [text, setText] = useState(subject.site);
  const [error, setError] = useState<string | null>(null);
  const [shown, setShown] = useState(subject.site);
  // A new value from the server (after a save or a reload) replaces the field's text.
  if (shown !== subject.site) {
    setShown(subject.site);
    setText(subject.site);
  }
  const save = () => {
    const result = validateSite(text);
    if (!result.ok) {
      setError(result.error);
      return;
    }
    setError(null);
    if (result.value !== subject.site) void onSave(result.value);
    else setText(subject.site);
  };
  return (
    <div className="site-cell">
      <input
        className="site-input"
        name={`site-${subject.id}`}
        aria-label={`Site of ${subject.subject_key}`}
        aria-invalid={error ? true : undefined}
        value={text}
        placeholder="–"
        disabled={saving}
        onChange={(e) => setText(e.target.value)}
        onBlur={save}
        onKeyDown={(e) => {
          if (e.key === "Enter") {
            e.preventDefault();
            save();
          } else if (e.key === "Escape") {
            setText(subject.site);
            setError(null);
          }
        }}
      />
      {error ? <div className="error small site-error">{error}</div> : null}
    </div>
  );
}

const EMPTY_UPLOAD: UploadFormValues = {
  subjectKey: "",
  label: "0",
  split: "train",
  image: null,
  mask: null,
  target: "",
  brainMask: null,
};

/** The continuous target in the subject table: a number, or empty for none; saved on Enter or blur. */
function TargetCell({
  subject,
  saving,
  onSave,
}: {
  subject: Subject;
  saving: boolean;
  onSave: (target: number | null) => Promise<void>;
}) {
  const asText = (v: number | null | undefined) => (v == null ? "" : String(v));
  const [text, setText] = useState(asText(subject.target));
  const [error, setError] = useState<string | null>(null);
  const [shown, setShown] = useState(subject.target);
  const pending = useRef<number | null | undefined>(undefined);
  if (shown !== subject.target) {
    setShown(subject.target);
    setText(asText(subject.target));
  }
  const save = () => {
    const result = parseTarget(text);
    if (!result.ok) {
      setError(result.error);
      return;
    }
    setError(null);
    // Enter saves, and the blur that follows (the field is disabled while saving) must not
    // send the same value again.
    if (pending.current !== undefined && pending.current === result.value) return;
    if (result.value !== (subject.target ?? null)) {
      pending.current = result.value;
      void onSave(result.value).finally(() => {
        pending.current = undefined;
      });
    } else setText(asText(subject.target));
  };
  return (
    <div className="site-cell">
      <input
        className="site-input target-input"
        name={`target-${subject.id}`}
        inputMode="decimal"
        aria-label={`Target of ${subject.subject_key}`}
        aria-invalid={error ? true : undefined}
        value={text}
        placeholder="–"
        disabled={saving}
        onChange={(e) => setText(e.target.value)}
        onBlur={save}
        onKeyDown={(e) => {
          if (e.key === "Enter") {
            e.preventDefault();
            save();
          } else if (e.key === "Escape") {
            setText(asText(subject.target));
            setError(null);
          }
        }}
      />
      {error ? <div className="error small site-error">{error}</div> : null}
    </div>
  );
}

function UploadSubjectForm({
  datasetId,
  onUploaded,
  targetName,
}: {
  datasetId: string;
  onUploaded: () => void;
  targetName: string;
}) {
  const [values, setValues] = useState<UploadFormValues>(EMPTY_UPLOAD);
  const [errors, setErrors] = useState<FieldErrors<keyof UploadFormValues>>({});
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [done, setDone] = useState<string | null>(null);
  const formRef = useRef<HTMLFormElement>(null);

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    const result = validateUploadForm(values);
    setErrors(result.ok ? {} : result.errors);
    setError(null);
    setDone(null);
    if (!result.ok) return;
    setBusy(true);
    try {
      const subject = await api.datasets.uploadSubject(parseId(datasetId, "dataset id"), result.value);
      setDone(`Uploaded ${subject.subject_key}.`);
      setValues({ ...EMPTY_UPLOAD, label: values.label, split: values.split });
      formRef.current?.reset();
      onUploaded();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form ref={formRef} className="inline-form" onSubmit={onSubmit} noValidate aria-label="Upload subject">
      <h2>Upload a subject</h2>
      <div className="form-grid">
        <Field label="Subject key" error={errors.subjectKey}>
          <input
            name="subject_key"
            value={values.subjectKey}
            onChange={(e) => setValues({ ...values, subjectKey: e.target.value })}
          />
        </Field>
        <Field label="Label" error={errors.label}>
          <select
            name="label"
            value={values.label}
            onChange={(e) => setValues({ ...values, label: e.target.value })}
          >
            <option value="0">healthy (0)</option>
            <option value="1">pathological (1)</option>
          </select>
        </Field>
        <Field label="Split" error={errors.split}>
          <select
            name="split"
            value={values.split}
            onChange={(e) => setValues({ ...values, split: e.target.value })}
          >
            {SPLITS.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Image (.nii, .nii.gz)" error={errors.image}>
          <input
            name="image"
            type="file"
            accept=".nii,.gz"
            onChange={(e) => setValues({ ...values, image: e.target.files?.[0] ?? null })}
          />
        </Field>
        <Field
          label={targetName ? `Target: ${targetName} (optional, regression)` : "Target (optional, for regression runs)"}
          error={errors.target}
        >
          <input
            name="target"
            inputMode="decimal"
            value={values.target}
            placeholder="e.g. 3.5"
            onChange={(e) => setValues({ ...values, target: e.target.value })}
          />
        </Field>
        <Field label="Lesion mask (optional)" error={errors.mask}>
          <input
            name="mask"
            type="file"
            accept=".nii,.gz"
            onChange={(e) => setValues({ ...values, mask: e.target.files?.[0] ?? null })}
          />
        </Field>
        <Field label="Brain mask (optional; else computed)" error={errors.brainMask}>
          <input
            name="brain_mask"
            type="file"
            accept=".nii,.gz"
            onChange={(e) => setValues({ ...values, brainMask: e.target.files?.[0] ?? null })}
          />
        </Field>
      </div>
      <ErrorMessage error={error} />
      {done ? <p className="ok">{done}</p> : null}
      <button type="submit" disabled={busy}>
        {busy ? "Uploading…" : "Upload"}
      </button>
    </form>
  );
}
