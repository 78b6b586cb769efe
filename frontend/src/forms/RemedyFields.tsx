// The "Training remedies" group of the launch form (fields and rules in ./remedies.ts).
import type { Dispatch, SetStateAction } from "react";
import { Field } from "../components/common";
import { DEVICES, GRAD_BALANCES, type RemedyField, type RemedyFormValues } from "./remedies";
import type { FieldErrors } from "./validation";

interface Props<V extends RemedyFormValues & { lossSetting: string }> {
  values: V;
  errors: FieldErrors<RemedyField>;
  setValues: Dispatch<SetStateAction<V>>;
}

export function RemedyFields<V extends RemedyFormValues & { lossSetting: string }>({
  values,
  errors,
  setValues,
}: Props<V>) {
  const set = (field: RemedyField) => (e: { target: { value: string } }) =>
    setValues((v) => ({ ...v, [field]: e.target.value }));
  const weighted = values.lossSetting === "lc_la_supervised" || values.lossSetting === "lc_la_unsupervised";
  return (
    <fieldset className="form-group" aria-label="Training remedies">
      <legend>Training remedies</legend>
      <p className="muted small">
        For steadier or faster training with L_A. Also remedies: a lambda warm-up (Lambda group) and a cheaper
        training attribution (gradient, EG with k = 1, fewer IG steps). The run page plots the gradient norms of L_C
        and L_A, their ratio and cosine, the attribution scale and its share of the step time.
      </p>
      <div className="form-grid">
        <Field label="Clip gradient norm at (empty: off)" error={errors.gradClipNorm}>
          <input
            name="grad_clip_norm"
            inputMode="decimal"
            value={values.gradClipNorm}
            onChange={set("gradClipNorm")}
          />
        </Field>
        {weighted ? (
          <>
            <Field label="Gradient balancing" error={errors.gradBalance}>
              <select name="grad_balance" value={values.gradBalance} onChange={set("gradBalance")}>
                {GRAD_BALANCES.map((b) => (
                  <option key={b.value} value={b.value}>
                    {b.label}
                  </option>
                ))}
              </select>
            </Field>
            {values.gradBalance === "fixed_ratio" ? (
              <Field label="Ratio ‖g_A‖ / ‖g_C‖" error={errors.gradBalanceRatio}>
                <input
                  name="grad_balance_ratio"
                  inputMode="decimal"
                  value={values.gradBalanceRatio}
                  onChange={set("gradBalanceRatio")}
                />
              </Field>
            ) : null}
            {values.gradBalance === "gradnorm" ? (
              <Field label="GradNorm alpha" error={errors.gradnormAlpha}>
                <input
                  name="gradnorm_alpha"
                  inputMode="decimal"
                  value={values.gradnormAlpha}
                  onChange={set("gradnormAlpha")}
                />
              </Field>
            ) : null}
            <Field label="L_A every n steps" error={errors.laEveryNSteps}>
              <input
                name="la_every_n_steps"
                inputMode="numeric"
                value={values.laEveryNSteps}
                onChange={set("laEveryNSteps")}
              />
            </Field>
          </>
        ) : null}
        {values.lossSetting === "lc_only" ? (
          <Field label="Probe L_A's gradient on the first n batches of each epoch" error={errors.gradProbeBatches}>
            <input
              name="grad_probe_batches"
              inputMode="numeric"
              value={values.gradProbeBatches}
              onChange={set("gradProbeBatches")}
            />
          </Field>
        ) : null}
        <Field label="Device" error={errors.device}>
          <select name="device" value={values.device} onChange={set("device")}>
            {DEVICES.map((d) => (
              <option key={d}>{d}</option>
            ))}
          </select>
        </Field>
      </div>
      <label className="check">
        <input
          type="checkbox"
          name="amp"
          checked={values.amp && values.device !== "cpu"}
          disabled={values.device === "cpu"}
          onChange={(e) => setValues((v) => ({ ...v, amp: e.target.checked }))}
        />
        {values.device === "cpu"
          ? "Mixed precision (CUDA only: not used with device cpu)"
          : "Mixed precision (CUDA only; ignored where the run lands on a CPU)"}
      </label>
      {errors.amp ? <span className="field-error">{errors.amp}</span> : null}
    </fieldset>
  );
}
