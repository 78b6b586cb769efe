import { type FormEvent, type ReactNode, useEffect, useRef, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { api } from "../api/client";
import { ApiError } from "../api/http";
import { canWrite } from "../api/types";
import { runPath } from "../api/urls";
import { ErrorMessage, Field } from "../components/common";
import { RegressionFields } from "../forms/RegressionFields";
import { defaultConstraints } from "../forms/regressionConfig";
import {
  ATTRIBUTION_LOSSES,
  ATTRIBUTION_LOSS_LABELS,
  EARLY_STOPPING_METRICS,
  LAMBDA_KINDS,
  LAUNCH_DEFAULTS,
  LOSS_SETTINGS,
  type LaunchField,
  type LaunchFormValues,
  NETWORKS,
  SEGMENTATION_EARLY_STOPPING,
  TRAIN_ATTRIBUTIONS,
  isSegmentation,
  serverFieldErrors,
  trainsAttribution,
  validateLaunchForm,
  weighsLambda,
} from "../forms/runConfig";
import { presetLines, withPreset } from "../forms/presets";
import { RemedyFields } from "../forms/RemedyFields";
import type { FieldErrors } from "../forms/validation";
import { useAsync } from "../hooks";

/** /runs/new?dataset=<id>: every RunConfig setting the launch needs, validated per field. */
export function LaunchRunPage() {
  const [search] = useSearchParams();
  const navigate = useNavigate();
  const projects = useAsync(() => api.projects.list(), []);
  const datasets = useAsync(() => api.datasets.list(), []);
  const presets = useAsync(() => api.presets.list(), []);
  const presetList = presets.data?.data ?? [];
  const writableProjects = new Set((projects.data?.data ?? []).filter((p) => canWrite(p.role)).map((p) => p.id));
  const datasetList = (datasets.data?.data ?? []).filter((d) => writableProjects.has(d.project_id));
  const [values, setValues] = useState<LaunchFormValues>({
    ...LAUNCH_DEFAULTS,
    datasetId: search.get("dataset") ?? "",
  });
  const [errors, setErrors] = useState<FieldErrors<LaunchField>>({});
  const [formErrors, setFormErrors] = useState<string[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  // Each refused submit moves the focus to the first field with a message.
  const formRef = useRef<HTMLFormElement>(null);
  const [refused, setRefused] = useState(0);
  useEffect(() => {
    if (refused === 0) return;
    const first = formRef.current?.querySelector<HTMLElement>(
      ".field-invalid input, .field-invalid select, .field-invalid textarea, [aria-invalid='true']",
    );
    first?.focus();
    first?.scrollIntoView({ block: "center" });
  }, [refused]);

  const set = (field: LaunchField) => (e: { target: { value: string } }) =>
    setValues((v) => ({ ...v, [field]: e.target.value }));
  const toggleMethod = (method: string, on: boolean) =>
    setValues((v) => ({
      ...v,
      trainAttribution: on ? [...v.trainAttribution, method] : v.trainAttribution.filter((m) => m !== method),
    }));

  const onSubmit = async (event: FormEvent) => {
    event.preventDefault();
    const result = validateLaunchForm(values);
    setErrors(result.ok ? {} : result.errors);
    setFormErrors([]);
    setError(null);
    if (!result.ok) {
      setRefused((n) => n + 1);
      return;
    }
    setBusy(true);
    try {
      const run = await api.runs.create(result.value);
      navigate(runPath(run.id));
    } catch (reason) {
      if (reason instanceof ApiError && reason.status === 422) {
        const split = serverFieldErrors(reason.detail);
        setErrors(split.fields);
        setFormErrors(split.form);
        if (Object.keys(split.fields).length > 0) setRefused((n) => n + 1);
        if (Object.keys(split.fields).length === 0 && split.form.length === 0) setError(reason);
      } else setError(reason);
    } finally {
      setBusy(false);
    }
  };

  const choosePreset = (e: { target: { value: string } }) => {
    const preset = presetList.find((p) => p.name === e.target.value) ?? null;
    setValues((v) => withPreset(v, preset));
    setErrors({});
  };
  const chosenPreset = presetList.find((p) => p.name === values.preset);

  const segmentation = isSegmentation(values);
  const attribution = trainsAttribution(values);
  const lambda = weighsLambda(values);
  const loss = segmentation
    ? { label: "Segmentation constraint" }
    : LOSS_SETTINGS.find((l) => l.value === values.lossSetting);
  // Switching to or from segmentation also switches the early-stopping metric's choices.
  const setTaskFields = (update: Partial<LaunchFormValues>) =>
    setValues((v) => {
      const next = { ...v, ...update };
      if (update.task === "segmentation" && v.task !== "segmentation") next.earlyStoppingMetric = "val_dice";
      if (update.task && update.task !== "segmentation" && v.task === "segmentation") {
        next.earlyStoppingMetric = LAUNCH_DEFAULTS.earlyStoppingMetric;
      }
      return next;
    });

  return (
    <section className="panel">
      <p className="crumbs">
        <Link to="/">Datasets and runs</Link> /
      </p>
      <h1>Launch a training run</h1>
      <ErrorMessage error={projects.error ?? datasets.error ?? presets.error} />
      {projects.data && writableProjects.size === 0 ? (
        <NoLaunchRights roles={projects.data.data.map((p) => [p.name, p.role ?? null] as const)} />
      ) : (
        <form
          ref={formRef}
          className="inline-form launch-form"
          onSubmit={onSubmit}
          noValidate
          aria-label="Launch run"
        >
          <fieldset className="form-group preset-group">
            <legend>Preset</legend>
            <Field label="Start from" error={errors.preset}>
              <select name="preset" value={values.preset} onChange={choosePreset}>
                <option value="">No preset (the fields below as they are)</option>
                {presetList.map((p) => (
                  <option key={p.name} value={p.name}>
                    {p.title}
                  </option>
                ))}
              </select>
            </Field>
            {chosenPreset ? (
              <div className="preset-values" data-testid="preset-values">
                <p className="muted small">{chosenPreset.description}</p>
                <dl>
                  {presetLines(chosenPreset.config).map((line) => (
                    <div key={line.key} className="preset-value">
                      <dt>{line.key}</dt>
                      <dd>
                        {line.value}
                        {line.onForm ? null : <span className="muted small"> (applied by the server)</span>}
                      </dd>
                    </div>
                  ))}
                </dl>
                <p className="muted small">
                  The fields below hold these values; what you change there overrides the preset.
                </p>
              </div>
            ) : null}
          </fieldset>
          <Group title="Run">
            <Field label="Dataset" error={errors.datasetId}>
              <select name="dataset" value={values.datasetId} onChange={set("datasetId")}>
                <option value="">Choose…</option>
                {datasetList.map((d) => (
                  <option key={d.id} value={d.id}>
                    {d.name}
                  </option>
                ))}
              </select>
            </Field>
            <Field label="Name" error={errors.name}>
              <input name="name" value={values.name} onChange={set("name")} />
            </Field>
            {segmentation ? null : (
              <Field label="Network" error={errors.network}>
                <select name="network" value={values.network} onChange={set("network")}>
                  {NETWORKS.map((n) => (
                    <option key={n}>{n}</option>
                  ))}
                </select>
              </Field>
            )}
          </Group>

          <fieldset className="form-group" hidden={segmentation}>
            <legend>Loss setting</legend>
            {LOSS_SETTINGS.map((l) => (
              <label key={l.value} className="choice">
                <input
                  type="radio"
                  name="loss_setting"
                  value={l.value}
                  checked={values.lossSetting === l.value}
                  onChange={(e) =>
                    // Each setting has its own default regression constraints.
                    setValues((v) => ({
                      ...v,
                      lossSetting: e.target.value,
                      regressionConstraints: defaultConstraints(e.target.value),
                    }))
                  }
                />
                <span>
                  <strong>{l.label}</strong> <span className="muted small">{l.help}</span>
                </span>
              </label>
            ))}
            {errors.lossSetting ? <span className="field-error">{errors.lossSetting}</span> : null}
          </fieldset>

          <RegressionFields values={values} errors={errors} onChange={setTaskFields} />

          {segmentation ? (
            <Group title="Segmentation (mixed supervision)">
              <Field label="Annotated fraction" error={errors.segAnnotatedFraction}>
                <input
                  name="seg_annotated_fraction"
                  inputMode="decimal"
                  value={values.segAnnotatedFraction}
                  onChange={set("segAnnotatedFraction")}
                />
              </Field>
              <label className="check">
                <input
                  type="checkbox"
                  name="seg_constraint"
                  checked={values.segConstraint}
                  onChange={(e) => setValues((v) => ({ ...v, segConstraint: e.target.checked }))}
                />
                Constraint on label-only healthy subjects (no pathological relevance anywhere)
              </label>
            </Group>
          ) : null}

          {attribution ? (
            <fieldset className="form-group">
              <legend>Attribution in training</legend>
              <p className="muted small">
                {loss?.label}: the methods checked are summed inside L_A.
              </p>
              <div className="form-row" role="group" aria-label="Training attribution methods">
                {TRAIN_ATTRIBUTIONS.map((m) => (
                  <label key={m.value} className="check">
                    <input
                      type="checkbox"
                      name="train_attribution"
                      value={m.value}
                      checked={values.trainAttribution.includes(m.value)}
                      onChange={(e) => toggleMethod(m.value, e.target.checked)}
                    />
                    {m.label}
                  </label>
                ))}
              </div>
              {errors.trainAttribution ? <span className="field-error">{errors.trainAttribution}</span> : null}
              <div className="form-grid">
                {values.trainAttribution.includes("integrated_gradients") ? (
                  <Field label="IG steps" error={errors.igSteps}>
                    <input name="ig_steps" inputMode="numeric" value={values.igSteps} onChange={set("igSteps")} />
                  </Field>
                ) : null}
                {values.trainAttribution.includes("expected_gradients") ? (
                  <Field label="EG samples k" error={errors.egK}>
                    <input name="eg_k" inputMode="numeric" value={values.egK} onChange={set("egK")} />
                  </Field>
                ) : null}
                <Field label="Attribution scale" error={errors.attributionScale}>
                  <input
                    name="attribution_scale"
                    inputMode="decimal"
                    value={values.attributionScale}
                    onChange={set("attributionScale")}
                  />
                </Field>
                {values.task === "regression" ? null : (
                <Field label="Attribution loss" error={errors.attributionLoss}>
                  <select name="attribution_loss" value={values.attributionLoss} onChange={set("attributionLoss")}>
                    {ATTRIBUTION_LOSSES.map((l) => (
                      <option key={l} value={l}>
                        {ATTRIBUTION_LOSS_LABELS[l]}
                      </option>
                    ))}
                  </select>
                </Field>
                )}
              </div>
            </fieldset>
          ) : null}

          {lambda ? (
            <Group title="Lambda (weight of L_A)">
              <Field label="Schedule" error={errors.lambdaKind}>
                <select name="lambda_kind" value={values.lambdaKind} onChange={set("lambdaKind")}>
                  {LAMBDA_KINDS.map((k) => (
                    <option key={k} value={k}>
                      {k === "constant" ? "constant" : "linear warm-up from 0"}
                    </option>
                  ))}
                </select>
              </Field>
              <Field label="Lambda" error={errors.lambdaValue}>
                <input name="lambda_value" inputMode="decimal" value={values.lambdaValue} onChange={set("lambdaValue")} />
              </Field>
              {values.lambdaKind === "linear_warmup" ? (
                <Field label="Warm-up epochs" error={errors.warmupEpochs}>
                  <input
                    name="warmup_epochs"
                    inputMode="decimal"
                    value={values.warmupEpochs}
                    onChange={set("warmupEpochs")}
                  />
                </Field>
              ) : null}
            </Group>
          ) : null}

          <Group title="Optimisation">
            <Field label="Epochs" error={errors.epochs}>
              <input name="epochs" inputMode="numeric" value={values.epochs} onChange={set("epochs")} />
            </Field>
            <Field label="Learning rate" error={errors.learningRate}>
              <input name="learning_rate" inputMode="decimal" value={values.learningRate} onChange={set("learningRate")} />
            </Field>
            <Field label="Batch size" error={errors.batchSize}>
              <input name="batch_size" inputMode="numeric" value={values.batchSize} onChange={set("batchSize")} />
            </Field>
            <Field label="Seed" error={errors.seed}>
              <input name="seed" inputMode="numeric" value={values.seed} onChange={set("seed")} />
            </Field>
            <Field label="Early-stopping metric" error={errors.earlyStoppingMetric}>
              <select
                name="early_stopping_metric"
                value={values.earlyStoppingMetric}
                onChange={set("earlyStoppingMetric")}
              >
                {(segmentation ? SEGMENTATION_EARLY_STOPPING : EARLY_STOPPING_METRICS).map((m) => (
                  <option key={m}>{m}</option>
                ))}
              </select>
            </Field>
            <label className="check">
              <input
                type="checkbox"
                name="augment"
                checked={values.augment}
                onChange={(e) => setValues((v) => ({ ...v, augment: e.target.checked }))}
              />
              Augmentation (flips, affine jitter)
            </label>
            {segmentation || values.task === "regression" ? null : (
              <label className="check">
                <input
                  type="checkbox"
                  name="normative_input"
                  checked={values.normativeInput}
                  onChange={(e) => setValues((v) => ({ ...v, normativeInput: e.target.checked }))}
                />
                Normative input (each voxel against the healthy training subjects; for lesions
                darker than white matter)
              </label>
            )}
          </Group>

          <RemedyFields values={values} errors={errors} setValues={setValues} />

          {formErrors.map((m) => (
            <p className="error" role="alert" key={m}>
              {m}
            </p>
          ))}
          <ErrorMessage error={error} />
          <button type="submit" disabled={busy}>
            {busy ? "Launching…" : "Launch run"}
          </button>
        </form>
      )}
    </section>
  );
}

function Group({ title, children }: { title: string; children: ReactNode }) {
  return (
    <fieldset className="form-group">
      <legend>{title}</legend>
      <div className="form-grid">{children}</div>
    </fieldset>
  );
}

/** What a user who may not launch runs sees instead of the form (a clinician, say). */
function NoLaunchRights({ roles }: { roles: readonly (readonly [string, string | null])[] }) {
  const clinician = roles.filter(([, role]) => role === "clinician").map(([name]) => name);
  return (
    <div className="note" role="note" data-testid="no-launch-rights">
      <p>
        Launching a training run needs the <strong>researcher</strong> or <strong>admin</strong> role in the
        project of the dataset.
        {clinician.length > 0
          ? ` You are a clinician in ${clinician.join(", ")}: clinicians review maps (Review, in the menu) and their corrections can train a new run, which a researcher launches from the run page.`
          : " You are not a member of any project yet."}
      </p>
      <p>Ask an admin of the project for the researcher role if you need to train models.</p>
    </div>
  );
}
