// Run page: the corrections clinicians drew on this run's maps, and the form that launches a
// new run trained on the targets merged with them.
import { type FormEvent, useState } from "react";
import { useNavigate } from "react-router";
import { api } from "../api/client";
import type { Run } from "../api/types";
import { runPath } from "../api/urls";
import { ErrorMessage } from "../components/common";
import type { LossSetting } from "../forms/choices";
import { useAsync } from "../hooks";

const SETTINGS = ["lc_la_supervised", "la_only", "lc_la_unsupervised"] as const satisfies readonly LossSetting[];
const POLICIES = [
  ["abstain", "disagreement → unconstrained"],
  ["missed_wins", "disagreement → lesion"],
  ["latest", "latest review wins"],
] as const;

export function FromReviewsPanel({ run, writable }: { run: Run; writable: boolean }) {
  const corrections = useAsync(() => api.runs.corrections(run.id), [run.id]);
  const navigate = useNavigate();
  const own = String(run.config.loss_setting ?? "lc_only");
  const [setting, setSetting] = useState<LossSetting>(
    SETTINGS.includes(own as never) ? (own as LossSetting) : "lc_la_supervised",
  );
  const [policy, setPolicy] = useState<string>("abstain");
  const [name, setName] = useState(`${run.name} · from reviews`);
  const [epochs, setEpochs] = useState(String(run.config.epochs ?? 3));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const data = corrections.data;
  if (!data || data.n_reviews === 0) return <ErrorMessage error={corrections.error} />;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const created = await api.runs.fromReviews(run.id, {
        name,
        policy: policy as "abstain",
        config: { loss_setting: setting, epochs: Number(epochs) },
      });
      navigate(runPath(created.id));
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel from-reviews" data-testid="from-reviews" data-corrections={data.n_reviews}>
      <h2>Corrections from reviews</h2>
      <table className="table narrow-table">
        <thead>
          <tr>
            <th>Subject</th>
            <th>Split</th>
            <th>Reviews</th>
          </tr>
        </thead>
        <tbody>
          {data.subjects.map((s) => (
            <tr key={s.subject_id} data-subject-id={s.subject_id}>
              <td>{s.subject_key}</td>
              <td>{s.split}</td>
              <td className="small">
                {s.reviews
                  .map((r) => `${r.reviewer}: ${r.missed_voxels} missed, ${r.spurious_voxels} spurious (${r.method})`)
                  .join("; ")}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <SplitWarning splits={data.subjects.map((s) => s.split)} />
      {writable ? (
        <form className="form-grid" onSubmit={(e) => void submit(e)} aria-label="Launch from reviews">
          <label>
            Name <input name="from-reviews-name" value={name} onChange={(e) => setName(e.target.value)} required />
          </label>
          <label>
            Loss setting
            <select name="from-reviews-setting" value={setting} onChange={(e) => setSetting(e.target.value as LossSetting)}>
              {SETTINGS.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </label>
          <label>
            Epochs{" "}
            <input
              name="from-reviews-epochs"
              type="number"
              min={1}
              value={epochs}
              onChange={(e) => setEpochs(e.target.value)}
            />
          </label>
          <label>
            When reviewers disagree
            <select name="from-reviews-policy" value={policy} onChange={(e) => setPolicy(e.target.value)}>
              {POLICIES.map(([value, text]) => (
                <option key={value} value={value}>
                  {text}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" disabled={busy}>
            Launch run from reviews
          </button>
        </form>
      ) : null}
      <ErrorMessage error={error} />
    </section>
  );
}

/**
 * A run from reviews trains on the train split only: say so when the corrections cannot
 * change its training (no corrected subject in train), or only some of them can.
 */
export function SplitWarning({ splits }: { splits: readonly string[] }) {
  const message = splitWarning(splits);
  if (!message) return null;
  return (
    <p className="warning small" role="note" data-testid="split-warning">
      {message}
    </p>
  );
}

export function splitWarning(splits: readonly string[]): string | null {
  if (splits.length === 0) return null;
  const outside = splits.filter((s) => s !== "train");
  if (outside.length === 0) return null;
  if (outside.length === splits.length) {
    const where = outside.every((s) => s === "test") ? "the test split" : "the val and test splits";
    const who = splits.length === 1 ? "The corrected subject is" : `All ${splits.length} corrected subjects are`;
    return (
      `${who} in ${where}: a run from reviews trains on the train split only, so these corrections ` +
      "would not change its training (they stay recorded)."
    );
  }
  return `${outside.length} of ${splits.length} corrected subjects are outside the train split and will not be trained on.`;
}
