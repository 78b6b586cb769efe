import { type FormEvent, useState } from "react";
import { Link } from "react-router";
import { api } from "../api/client";
import type { Dataset, Run } from "../api/types";
import { runPath } from "../api/urls";
import { ErrorMessage, Field } from "../components/common";
import type { FieldErrors } from "../forms/validation";
import {
  BRAIN_CHOICES,
  IMPORT_DEFAULTS,
  IMPORT_TASKS,
  INTENSITIES,
  type ImportField,
  type ImportFormValues,
  validateImportForm,
} from "./modelImport";

/** "Import a model": a TorchScript file or a zipped MONAI bundle with its input spec, posted to
 * POST /runs/import. The answer waits for a worker's forward pass; a refusal shows the server's
 * reason, a success the new run. */
export function ImportModelForm({ datasets, onImported }: { datasets: Dataset[]; onImported: () => void }) {
  const [values, setValues] = useState<ImportFormValues>(IMPORT_DEFAULTS);
  const [errors, setErrors] = useState<FieldErrors<ImportField>>({});
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [imported, setImported] = useState<Run | null>(null);
  // A remount of the file input clears it after a success.
  const [fileKey, setFileKey] = useState(0);
  const only = datasets.length === 1 ? datasets[0] : null;
  const datasetId = only ? String(only.id) : values.datasetId;

  const set = (field: Exclude<ImportField, "file">) => (e: { target: { value: string } }) =>
    setValues((v) => ({ ...v, [field]: e.target.value }));

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    const result = validateImportForm({ ...values, datasetId });
    setErrors(result.ok ? {} : result.errors);
    setError(null);
    setImported(null);
    if (!result.ok) return;
    setBusy(true);
    try {
      const run = await api.runs.importModel(result.value);
      setImported(run);
      setValues((v) => ({ ...v, name: "", file: null }));
      setFileKey((k) => k + 1);
      onImported();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form className="inline-form" onSubmit={onSubmit} noValidate aria-label="Import a model">
      <h2>Import a model</h2>
      <p className="muted small">
        A TorchScript file (<code>torch.jit.save</code>) or a zipped MONAI bundle, with the input it takes. A worker
        runs it on one subject of the dataset before the run is stored.
      </p>
      <div className="form-row">
        {only ? null : (
          <Field label="Dataset" error={errors.datasetId}>
            <select name="import_dataset_id" value={datasetId} onChange={set("datasetId")}>
              <option value="">Choose…</option>
              {datasets.map((d) => (
                <option key={d.id} value={d.id}>
                  {d.name}
                </option>
              ))}
            </select>
          </Field>
        )}
        <Field label="Run name" error={errors.name}>
          <input name="import_name" value={values.name} onChange={set("name")} />
        </Field>
        <Field label="Model file" error={errors.file}>
          <input
            key={fileKey}
            name="import_model"
            type="file"
            accept=".ts,.pt,.pth,.pt2,.zip"
            onChange={(e) => {
              const file = e.target.files?.[0] ?? null;
              setValues((v) => ({ ...v, file }));
            }}
          />
        </Field>
      </div>
      <div className="form-row">
        <Field label="Grid x" error={errors.gridX}>
          <input name="import_grid_x" inputMode="numeric" size={4} value={values.gridX} onChange={set("gridX")} />
        </Field>
        <Field label="Grid y" error={errors.gridY}>
          <input name="import_grid_y" inputMode="numeric" size={4} value={values.gridY} onChange={set("gridY")} />
        </Field>
        <Field label="Grid z" error={errors.gridZ}>
          <input name="import_grid_z" inputMode="numeric" size={4} value={values.gridZ} onChange={set("gridZ")} />
        </Field>
        <Field label="Channels" error={errors.channels}>
          <input
            name="import_channels"
            inputMode="numeric"
            size={3}
            value={values.channels}
            onChange={set("channels")}
          />
        </Field>
        <Field label="Intensity" error={errors.intensity}>
          <select name="import_intensity" value={values.intensity} onChange={set("intensity")}>
            {INTENSITIES.map((choice) => (
              <option key={choice} value={choice}>
                {choice}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Brain" error={errors.brain}>
          <select name="import_brain" value={values.brain} onChange={set("brain")}>
            {BRAIN_CHOICES.map((choice) => (
              <option key={choice} value={choice}>
                {choice}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Output" error={errors.task}>
          <select name="import_task" value={values.task} onChange={set("task")}>
            {IMPORT_TASKS.map((choice) => (
              <option key={choice} value={choice}>
                {choice === "regression" ? "regression target" : "classification logit"}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Logit index" error={errors.logitIndex}>
          <input
            name="import_logit_index"
            inputMode="numeric"
            size={4}
            value={values.logitIndex}
            onChange={set("logitIndex")}
          />
        </Field>
        <button type="submit" disabled={busy}>
          {busy ? "Checking the model…" : "Import"}
        </button>
      </div>
      <ErrorMessage error={error} />
      {imported ? (
        <p className="ok" role="status" data-testid="imported-run">
          Imported as <Link to={runPath(imported.id)}>{imported.name}</Link> (run {imported.id},{" "}
          {imported.model_format === "monai_bundle" ? "MONAI bundle" : "TorchScript"}).
        </p>
      ) : null}
    </form>
  );
}
