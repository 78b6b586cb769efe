// A run from reviews next to the run it corrected, on the corrected subjects: provenance of
// the merged targets and the lesion metrics of both runs.
import { Link } from "react-router";
import { api } from "../api/client";
import { compareViewerPath, epochViewerPath, runPath } from "../api/urls";
import { ErrorMessage } from "../components/common";
import { formatNumber } from "../format";
import { useAsync } from "../hooks";
import { reviewers, sideBySideMaps, sideMetrics } from "./epochs";

export function CorrectedSubjects({ runId, refresh }: { runId: number; refresh?: unknown }) {
  const targets = useAsync(() => api.runs.correctedTargets(runId), [runId, refresh]);
  const data = targets.data;
  if (!data || data.from_reviews_of == null) return <ErrorMessage error={targets.error} />;
  const earlier = data.from_reviews_of;
  return (
    <section className="panel corrected-subjects" data-testid="corrected-subjects" data-run-id={runId}>
      <h2>Corrected subjects</h2>
      <p className="small">
        Trained on the targets of <Link to={runPath(earlier)}>run {earlier}</Link> merged with its reviewers'
        corrections (missed lesion → 1, spurious relevance → 0). Lesion metrics of Integrated Gradients maps of each
        run's best weights (working grid).
      </p>
      <table className="table">
        <thead>
          <tr>
            <th rowSpan={2}>Subject</th>
            <th rowSpan={2}>Reviewers</th>
            <th rowSpan={2}>Voxels changed</th>
            <th colSpan={2}>Run {earlier} (earlier)</th>
            <th colSpan={2}>Run {runId} (corrected)</th>
            <th rowSpan={2} />
          </tr>
          <tr>
            <th>lesion mass</th>
            <th>Dice top 5%</th>
            <th>lesion mass</th>
            <th>Dice top 5%</th>
          </tr>
        </thead>
        <tbody>
          {data.data.map((t) => {
            const before = sideMetrics(t, "before");
            const after = sideMetrics(t, "after");
            const trained = (t.stats as Record<string, unknown>).trained_on !== false;
            return (
              <tr key={t.id} data-subject-id={t.subject_id}>
                <td>
                  {t.subject_key || `#${t.subject_id}`} <span className="muted small">{t.split}</span>
                  {trained ? null : <span className="muted small"> (not in train: recorded, not trained on)</span>}
                </td>
                <td>{reviewers(t).join(", ")}</td>
                <td className="num">{formatNumber((t.stats as Record<string, number>).changed_voxels)}</td>
                <td className="num" data-metric="before-lesion-mass">{formatNumber(before?.lesion_mass)}</td>
                <td className="num">{formatNumber(before?.dice_top5)}</td>
                <td className="num" data-metric="after-lesion-mass">{formatNumber(after?.lesion_mass)}</td>
                <td className="num">{formatNumber(after?.dice_top5)}</td>
                <td className="small">
                  <Link to={epochViewerPath(t.subject_id, runId)}>epochs</Link> ·{" "}
                  <Link to={compareViewerPath(t.subject_id, sideBySideMaps(t))} className="side-by-side">
                    maps side by side
                  </Link>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
