// The run page's "Shortcut report" and "Cohort map" sections (issue 18): queue a report or a
// cohort map, follow its job, show the per-site metrics, the counterfactual check, the share of
// relevance outside the brain and, when raised, the flag with its numbers.
import { useCallback, useEffect, useState } from "react";
import { Link } from "react-router";
import { api } from "../api/client";
import type { Job, Run } from "../api/types";
import { isActive } from "../api/types";
import { ErrorMessage, ProgressBar } from "../components/common";
import { formatNumber } from "../format";
import {
  type CohortMap,
  type ShortcutReport,
  counterfactualSummary,
  fixed2,
  flagSentence,
  parseBox,
  share,
  signed,
  siteName,
} from "./format";

const POLL_MS = 1000;
const SPLITS = ["test", "val", "train"] as const;
type SplitName = (typeof SPLITS)[number];
const METHODS = ["integrated_gradients", "saliency", "smoothgrad", "gradient_shap", "deeplift", "input_x_gradient"] as const;
type Method = (typeof METHODS)[number];

/** The in-app route of a cohort map in the viewer. */
export function cohortViewerPath(runId: number, cohortId: number, which: "mean" | "t"): string {
  return `/runs/${runId}/cohort/${cohortId}?map=${which}`;
}

function jobActive(job: Job | null | undefined): boolean {
  return job != null && isActive(job.status);
}

/** Re-reads ``load`` every POLL_MS while ``active`` says the newest item's job is running. */
function usePolled<T>(load: () => Promise<T>, active: (value: T | undefined) => boolean) {
  const [value, setValue] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  const refresh = useCallback(() => setTick((t) => t + 1), []);
  useEffect(() => {
    let current = true;
    load().then(
      (v) => current && (setValue(v), setError(null)),
      (reason: unknown) => current && setError(reason),
    );
    return () => {
      current = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- ``load`` is rebuilt every render
  }, [tick]);
  const running = active(value);
  useEffect(() => {
    if (!running) return;
    const timer = setTimeout(refresh, POLL_MS);
    return () => clearTimeout(timer);
  }, [running, value, refresh]);
  return { value, error, refresh };
}

export function ShortcutReportPanel({ run, writable }: { run: Run; writable: boolean }) {
  const classification = (run.config.task ?? "classification") === "classification";
  if (run.status !== "succeeded" || !classification) return null;
  return (
    <>
      <ShortcutReportSection run={run} writable={writable} />
      <CohortMapSection run={run} writable={writable} />
    </>
  );
}

function ShortcutReportSection({ run, writable }: { run: Run; writable: boolean }) {
  const reports = usePolled(
    () => api.client.GET("/runs/{run_id}/shortcut-reports", { path: { run_id: run.id } }),
    (v) => jobActive(v?.data[0]?.job),
  );
  const [split, setSplit] = useState<SplitName>("test");
  const [kind, setKind] = useState<"box" | "top_relevance">("top_relevance");
  const [box, setBox] = useState<string[]>(["", "", "", "", "", ""]);
  const [fraction, setFraction] = useState("1");
  const [fill, setFill] = useState<"mean" | "blur" | "background">("mean");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const submit = async () => {
    setError(null);
    let region: { kind: "box"; box_mm: number[][] } | { kind: "top_relevance"; fraction: number };
    if (kind === "box") {
      const parsed = parseBox(box);
      if ("error" in parsed) return setError(parsed.error);
      region = { kind: "box", box_mm: parsed.box };
    } else {
      const percent = Number(fraction);
      if (!(percent > 0 && percent <= 50)) return setError("The top-relevance share must be between 0 and 50%.");
      region = { kind: "top_relevance", fraction: percent / 100 };
    }
    setBusy(true);
    try {
      await api.client.POST("/runs/{run_id}/shortcut-reports", {
        path: { run_id: run.id },
        body: { split, region, fill },
      });
      reports.refresh();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };

  const latest = reports.value?.data[0] ?? null;
  return (
    <section className="panel" data-testid="shortcut-report">
      <h2>Shortcut report</h2>
      <p className="muted small">
        Does a site or a region explain the decision? Per-site metrics, the predictions with a region erased, and the
        share of relevance outside the brain (see the guide for the thresholds).
      </p>
      {writable ? (
        <div className="form-row">
          <label>
            Split{" "}
            <select value={split} onChange={(e) => setSplit(e.target.value as SplitName)}>
              {SPLITS.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          </label>{" "}
          <label>
            Region{" "}
            <select value={kind} onChange={(e) => setKind(e.target.value as "box" | "top_relevance")}>
              <option value="top_relevance">top-relevance region of each map</option>
              <option value="box">a box in scanner mm</option>
            </select>
          </label>{" "}
          {kind === "top_relevance" ? (
            <label>
              Top % of |relevance|{" "}
              <input size={4} value={fraction} onChange={(e) => setFraction(e.target.value)} />
            </label>
          ) : (
            <span data-testid="box-corners">
              {["x0", "y0", "z0", "x1", "y1", "z1"].map((name, i) => (
                <label key={name}>
                  {name}{" "}
                  <input
                    size={5}
                    aria-label={`box ${name} (mm)`}
                    value={box[i]}
                    onChange={(e) => setBox(box.map((v, j) => (j === i ? e.target.value : v)))}
                  />{" "}
                </label>
              ))}
            </span>
          )}{" "}
          <label>
            Fill{" "}
            <select value={fill} onChange={(e) => setFill(e.target.value as "mean" | "blur" | "background")}>
              <option value="mean">brain mean</option>
              <option value="blur">blurred copy</option>
              <option value="background">background</option>
            </select>
          </label>{" "}
          <button type="button" disabled={busy || jobActive(latest?.job)} onClick={() => void submit()}>
            Run shortcut report
          </button>
        </div>
      ) : null}
      <ErrorMessage error={error ?? reports.error} />
      {latest ? <ReportView report={latest} /> : <p className="muted">No shortcut report yet.</p>}
    </section>
  );
}

function ReportView({ report }: { report: ShortcutReport }) {
  const job = report.job;
  const sentence = flagSentence(report);
  const result = report.result;
  const cf = result?.counterfactual;
  const outside = result?.outside_brain;
  return (
    <div data-testid="shortcut-latest" data-report-id={report.id} data-status={job?.status ?? "unknown"}>
      <p className="muted small">
        Report #{report.id}, {report.split} split
        {job ? ` · ${job.status}` : ""}
      </p>
      {job && isActive(job.status) ? <ProgressBar job={job} /> : null}
      {job?.error ? <p className="error small">{job.error}</p> : null}
      {result && sentence ? (
        <p className="error" role="alert" data-testid="shortcut-flag">
          {sentence}
        </p>
      ) : null}
      {result && !sentence ? (
        <p data-testid="shortcut-no-flag">No flag raised: no site or region explains the decision by these checks.</p>
      ) : null}
      {result ? (
        <table className="table narrow-table" data-testid="shortcut-sites">
          <thead>
            <tr>
              <th>site</th>
              <th className="num">n</th>
              <th className="num">pathological</th>
              <th className="num">AUROC</th>
              <th className="num">other sites' AUROC</th>
              <th className="num">accuracy</th>
            </tr>
          </thead>
          <tbody>
            {result.sites.map((s) => (
              <tr key={siteName(s.site)} data-site={siteName(s.site)}>
                <td>{siteName(s.site)}</td>
                <td className="num">{s.n}</td>
                <td className="num">{s.n_pathological}</td>
                <td className="num">{fixed2(s.auroc)}</td>
                <td className="num">{s.site == null ? "" : fixed2(s.others_auroc)}</td>
                <td className="num">{formatNumber(s.accuracy)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {cf ? (
        <div data-testid="shortcut-counterfactual">
          <h3>Counterfactual: {cf.region} erased ({cf.fill})</h3>
          <p data-testid="counterfactual-summary">{counterfactualSummary(cf)}</p>
          <table className="table narrow-table">
            <tbody>
              <tr>
                <td>subjects</td>
                <td className="num">{cf.n}</td>
              </tr>
              <tr>
                <td>AUROC before / after</td>
                <td className="num" data-testid="auroc-before-after">
                  {fixed2(cf.before.auroc)} / {fixed2(cf.after.auroc)}
                </td>
              </tr>
              <tr>
                <td>mean logit change, pathological / healthy</td>
                <td className="num">
                  {signed(cf.mean_logit_change_pathological)} / {signed(cf.mean_logit_change_healthy)}
                </td>
              </tr>
            </tbody>
          </table>
        </div>
      ) : null}
      {outside ? (
        <p data-testid="shortcut-outside-brain">
          Relevance outside the brain ({outside.n_maps} maps): {share(outside.mean_abs_share)} of |relevance|,{" "}
          {share(outside.mean_positive_share)} of the positive relevance; the voxels outside take{" "}
          {share(outside.mean_volume_share)} of the volume.
        </p>
      ) : result ? (
        <p className="muted small">No maps of this split yet: the share outside the brain is not computed.</p>
      ) : null}
    </div>
  );
}

function CohortMapSection({ run, writable }: { run: Run; writable: boolean }) {
  const cohorts = usePolled(
    () => api.client.GET("/runs/{run_id}/cohort-maps", { path: { run_id: run.id } }),
    (v) => jobActive(v?.data[0]?.job),
  );
  const [split, setSplit] = useState<SplitName>("test");
  const [label, setLabel] = useState<0 | 1>(1);
  const [method, setMethod] = useState<Method>("integrated_gradients");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async () => {
    setError(null);
    setBusy(true);
    try {
      await api.client.POST("/runs/{run_id}/cohort-maps", {
        path: { run_id: run.id },
        body: { split, label, method },
      });
      cohorts.refresh();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };
  const latest: CohortMap | null = cohorts.value?.data[0] ?? null;
  return (
    <section className="panel" data-testid="cohort-map">
      <h2>Cohort map</h2>
      <p className="muted small">
        The mean signed map and the voxel-wise one-sample t-map of the run's maps over a split and label, on the first
        subject's grid.
      </p>
      {writable ? (
        <div className="form-row">
          <label>
            Split{" "}
            <select value={split} onChange={(e) => setSplit(e.target.value as SplitName)}>
              {SPLITS.map((s) => (
                <option key={s}>{s}</option>
              ))}
            </select>
          </label>{" "}
          <label>
            Label{" "}
            <select value={label} onChange={(e) => setLabel(Number(e.target.value) as 0 | 1)}>
              <option value={1}>pathological</option>
              <option value={0}>healthy</option>
            </select>
          </label>{" "}
          <label>
            Method{" "}
            <select value={method} onChange={(e) => setMethod(e.target.value as Method)}>
              {METHODS.map((m) => (
                <option key={m}>{m}</option>
              ))}
            </select>
          </label>{" "}
          <button type="button" disabled={busy || jobActive(latest?.job)} onClick={() => void submit()}>
            Compute cohort map
          </button>
        </div>
      ) : null}
      <ErrorMessage error={error ?? cohorts.error} />
      {latest ? (
        <div data-testid="cohort-latest" data-cohort-id={latest.id} data-status={latest.job?.status ?? "unknown"}>
          <p className="muted small">
            Cohort map #{latest.id}: {latest.method} maps, {latest.split} split, label {latest.label}
            {latest.job ? ` · ${latest.job.status}` : ""}
            {latest.n_subjects ? ` · ${latest.n_subjects} subjects` : ""}
          </p>
          {latest.job && isActive(latest.job.status) ? <ProgressBar job={latest.job} /> : null}
          {latest.job?.error ? <p className="error small">{latest.job.error}</p> : null}
          {latest.job?.status === "succeeded" ? (
            <p className="row-actions">
              <Link to={cohortViewerPath(run.id, latest.id, "mean")}>Open the mean map in the viewer</Link>{" "}
              <Link to={cohortViewerPath(run.id, latest.id, "t")}>Open the t-map in the viewer</Link>
            </p>
          ) : null}
        </div>
      ) : (
        <p className="muted">No cohort map yet.</p>
      )}
    </section>
  );
}
