// The launch form's task choice and, for regression, its loss, constraints and penalty.
import { Field } from "../components/common";
import type { LaunchField, LaunchFormValues } from "./runConfig";
import { REGRESSION_CONSTRAINTS, REGRESSION_LOSSES, REGRESSION_PENALTIES, TASKS } from "./regressionConfig";
import type { FieldErrors } from "./validation";

export function RegressionFields({
  values,
  errors,
  onChange,
}: {
  values: LaunchFormValues;
  errors: FieldErrors<LaunchField>;
  onChange: (update: Partial<LaunchFormValues>) => void;
}) {
  const toggle = (constraint: string, on: boolean) =>
    onChange({
      regressionConstraints: on
        ? [...values.regressionConstraints, constraint]
        : values.regressionConstraints.filter((c) => c !== constraint),
    });
  const constrained = values.lossSetting !== "lc_only";
  return (
    <fieldset className="form-group">
      <legend>Task</legend>
      {TASKS.map((t) => (
        <label key={t.value} className="choice">
          <input
            type="radio"
            name="task"
            value={t.value}
            checked={values.task === t.value}
            onChange={(e) => onChange({ task: e.target.value })}
          />
          <span>
            <strong>{t.label}</strong> <span className="muted small">{t.help}</span>
          </span>
        </label>
      ))}
      {errors.task ? <span className="field-error">{errors.task}</span> : null}
      {values.task === "regression" ? (
        <>
          <div className="form-grid">
            <Field label="Regression loss" error={errors.regressionLoss}>
              <select
                name="regression_loss"
                value={values.regressionLoss}
                onChange={(e) => onChange({ regressionLoss: e.target.value })}
              >
                {REGRESSION_LOSSES.map((l) => (
                  <option key={l.value} value={l.value}>
                    {l.label}
                  </option>
                ))}
              </select>
            </Field>
            {constrained ? (
              <Field label="Constraint penalty" error={errors.regressionPenalty}>
                <select
                  name="regression_penalty"
                  value={values.regressionPenalty}
                  onChange={(e) => onChange({ regressionPenalty: e.target.value })}
                >
                  {REGRESSION_PENALTIES.map((p) => (
                    <option key={p.value} value={p.value}>
                      {p.label}
                    </option>
                  ))}
                </select>
              </Field>
            ) : null}
          </div>
          {constrained ? (
            <div className="form-row" role="group" aria-label="Regression constraints">
              <span className="muted small">Positive relevance raises the prediction. Constraints:</span>
              {REGRESSION_CONSTRAINTS.map((c) => (
                <label key={c.value} className="check" title={c.help}>
                  <input
                    type="checkbox"
                    name="regression_constraints"
                    value={c.value}
                    checked={values.regressionConstraints.includes(c.value)}
                    onChange={(e) => toggle(c.value, e.target.checked)}
                  />
                  {c.label}
                </label>
              ))}
            </div>
          ) : null}
          {errors.regressionConstraints ? (
            <span className="field-error">{errors.regressionConstraints}</span>
          ) : null}
        </>
      ) : null}
    </fieldset>
  );
}
