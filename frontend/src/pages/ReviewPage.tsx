// /review?project=ID: a clinician's queue of maps to review (blinded by default), the viewer with
// drawing tools for corrections, the rating form, the CSV export and the agreement panel.
import { useCallback, useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import { readStats } from "../api/types";
import { attributionDisplayUrl, reviewsCsvUrl, subjectImageUrl, subjectMaskDrawingUrl } from "../api/urls";
import { useAsync } from "../hooks";
import {
  CORRECTION_COLORMAP,
  DRAW_TOOLS,
  type DrawTool,
  EMPTY_REVIEW_FORM,
  PEN_VALUE,
  RATING_LABELS,
  type ReviewFormErrors,
  type ReviewFormValues,
  agreementSummary,
  countLabels,
  formatKappa,
  formatPercent,
  kappaStrength,
  keyAction,
  pickCurrent,
  queueRows,
  queueSummary,
  validateReviewForm,
} from "../review/review";
import { Colorbar } from "../viewer/Colorbar";
import { ViewerControls } from "../viewer/ViewerControls";
import { useViewerController } from "../viewer/useViewerController";

export default function ReviewPage() {
  const [search, setSearch] = useSearchParams();
  const projectParam = search.get("project");
  const projects = useAsync(() => api.projects.list(), []);
  const projectList = projects.data?.data ?? [];
  const projectId = projectParam && /^\d+$/.test(projectParam) ? Number(projectParam) : (projectList[0]?.id ?? null);
  const [blinded, setBlinded] = useState(true);
  const queue = useAsync(
    () => (projectId === null ? Promise.resolve(null) : api.reviews.queue(projectId, blinded)),
    [projectId, blinded],
  );
  const [wanted, setWanted] = useState<number | null>(null);
  const [saved, setSaved] = useState<{ id: number; correction: boolean } | null>(null);
  const agreement = useAsync(
    () => (projectId === null ? Promise.resolve(null) : api.reviews.agreement(projectId)),
    [projectId, saved?.id],
  );
  const items = queue.data?.data ?? [];
  const current = pickCurrent(items, wanted);
  const rows = queueRows(items, blinded);

  const onSaved = useCallback(
    (id: number, correction: boolean) => {
      setSaved({ id, correction });
      setWanted(null);
      queue.reload();
    },
    [queue],
  );

  return (
    <div className="review-page" data-queue-count={queue.data ? items.length : undefined}>
      <header>
        <h1>Review attribution maps</h1>
        <div className="review-toolbar">
          <label>
            Project{" "}
            <select
              value={projectId ?? ""}
              onChange={(e) => {
                setWanted(null);
                setSearch({ project: e.target.value });
              }}
            >
              {projectList.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name}
                </option>
              ))}
            </select>
          </label>
          <label>
            <input
              type="checkbox"
              name="blinded"
              checked={blinded}
              onChange={(e) => {
                setWanted(null);
                setBlinded(e.target.checked);
              }}
            />{" "}
            Blinded (hide run names, shuffled order)
          </label>
          <a href={reviewsCsvUrl()} download className="button-link">
            Export reviews (CSV)
          </a>
        </div>
        {saved ? (
          <p className="note" role="status" data-review-status="saved" data-review-id={saved.id}>
            Saved review #{saved.id}
            {saved.correction ? " with its correction" : ""}.
          </p>
        ) : null}
      </header>
      {queue.error ? <p className="error">{errorMessage(queue.error)}</p> : null}
      <div className="review-layout">
        <nav className="review-queue" aria-label="Review queue">
          <p className="muted small">{queue.data ? queueSummary(items.length, queue.data.reviewed) : "Loading…"}</p>
          <ol>
            {rows.map((row) => (
              <li key={row.attributionId}>
                <button
                  type="button"
                  className={current?.attribution_id === row.attributionId ? "queue-item current" : "queue-item"}
                  data-attribution-id={row.attributionId}
                  onClick={() => setWanted(row.attributionId)}
                >
                  <span className="muted small">{row.position}</span> {row.title}
                  {row.detail ? <span className="muted small"> {row.detail}</span> : null}
                </button>
              </li>
            ))}
          </ol>
        </nav>
        <section className="review-main">
          {current ? (
            <ReviewItem
              key={current.attribution_id}
              attributionId={current.attribution_id}
              subjectId={current.subject_id}
              title={current.label}
              onSaved={onSaved}
            />
          ) : (
            <p className="muted">Nothing to review here.</p>
          )}
        </section>
      </div>
      <section className="panel agreement-panel" aria-label="Agreement between raters">
        <h2>Agreement between raters</h2>
        {agreement.error ? <p className="error">{errorMessage(agreement.error)}</p> : null}
        {agreement.data ? (
          <>
            <p>{agreementSummary(agreement.data)}</p>
            <p>
              Mean Cohen's kappa (quadratic weights):{" "}
              <strong data-mean-kappa>{formatKappa(agreement.data.mean_kappa)}</strong> (
              {kappaStrength(agreement.data.mean_kappa)}); agreement on trust:{" "}
              <strong>{formatPercent(agreement.data.trust_agreement)}</strong>
            </p>
            {agreement.data.pairs.length > 0 ? (
              <table>
                <thead>
                  <tr>
                    <th>Raters</th>
                    <th>Shared maps</th>
                    <th>Kappa</th>
                    <th>Trust agreement</th>
                  </tr>
                </thead>
                <tbody>
                  {agreement.data.pairs.map((p) => (
                    <tr key={`${p.rater_a}-${p.rater_b}`}>
                      <td>
                        {p.rater_a} · {p.rater_b}
                      </td>
                      <td>{p.n_maps}</td>
                      <td title={kappaStrength(p.kappa)}>{formatKappa(p.kappa)}</td>
                      <td>{formatPercent(p.trust_agreement)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : null}
          </>
        ) : null}
      </section>
      <p className="muted small">
        <Link to="/">Back to datasets and runs</Link>
      </p>
    </div>
  );
}

function ReviewItem({
  attributionId,
  subjectId,
  title,
  onSaved,
}: {
  attributionId: number;
  subjectId: number;
  title: string;
  onSaved: (reviewId: number, correction: boolean) => void;
}) {
  const data = useAsync(
    async () => ({
      subject: await api.subjects.get(subjectId),
      attribution: await api.attributions.get(attributionId),
    }),
    [subjectId, attributionId],
  );
  const { hostRef, controller, snapshot } = useViewerController();
  const [tool, setToolState] = useState<DrawTool>("off");
  const [drawn, setDrawn] = useState({ missed: 0, spurious: 0 });
  const [form, setForm] = useState<ReviewFormValues>(EMPTY_REVIEW_FORM);
  const [errors, setErrors] = useState<ReviewFormErrors>({});
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const loaded = data.data;

  useEffect(() => {
    if (!controller || !loaded) return;
    const stats = readStats(loaded.attribution.stats);
    void controller.load({
      imageUrl: subjectImageUrl(loaded.subject.id),
      relevance: stats ? { url: attributionDisplayUrl(loaded.attribution.id), stats } : null,
      lesionUrl: loaded.subject.has_mask ? subjectMaskDrawingUrl(loaded.subject.id) : null,
    });
  }, [controller, loaded]);

  const setTool = useCallback(
    (next: DrawTool) => {
      setToolState(next);
      controller?.setDrawing(next === "off" ? null : PEN_VALUE[next], CORRECTION_COLORMAP);
    },
    [controller],
  );
  const recount = useCallback(() => setDrawn(countLabels(controller?.drawingBitmap())), [controller]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      const inTextField = !!target && ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
      const action = keyAction(e.key, { ctrl: e.ctrlKey || e.metaKey, inTextField });
      if (!action) return;
      e.preventDefault();
      if (action.kind === "undo") {
        controller?.undoDrawing();
        recount();
      } else setTool(action.tool);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [controller, setTool, recount]);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const result = validateReviewForm(form, attributionId);
    if (!result.ok) {
      setErrors(result.errors);
      return;
    }
    setErrors({});
    setSubmitError(null);
    setBusy(true);
    try {
      const counts = countLabels(controller?.drawingBitmap());
      const nifti = counts.missed + counts.spurious > 0 ? await controller?.exportDrawing() : null;
      const review = await api.reviews.create(result.value);
      if (nifti) {
        await api.reviews.putCorrection(review.id, new Blob([nifti as BlobPart], { type: "application/octet-stream" }));
      }
      onSaved(review.id, Boolean(nifti));
    } catch (error) {
      setSubmitError(errorMessage(error));
    } finally {
      setBusy(false);
    }
  };

  const state = data.error ? "error" : loaded ? snapshot.phase : "loading";
  return (
    <div className="review-item" data-attribution-id={attributionId}>
      <h2>{title}</h2>
      <section className="viewer" data-viewer-state={state} aria-busy={state === "loading"}>
        <div className="viewer-main" onPointerUp={recount}>
          <div className="viewer-canvas-host" ref={hostRef} />
          {data.error || snapshot.error ? (
            <p className="error viewer-error" role="alert">
              {data.error ? errorMessage(data.error) : snapshot.error}
            </p>
          ) : null}
          <p className="location muted small">{snapshot.location || "\u00a0"}</p>
        </div>
        <aside className="viewer-side">
          <ViewerControls controller={controller} snapshot={snapshot} />
          <Colorbar thresholds={snapshot.thresholds} scale={snapshot.colourScale} />
        </aside>
      </section>
      <fieldset className="draw-tools" data-draw-tool={tool}>
        <legend>Corrections (drawn on the MR grid; hide the relevance to see them under it)</legend>
        {DRAW_TOOLS.map((t) => (
          <button
            key={t.tool}
            type="button"
            data-tool={t.tool}
            aria-pressed={tool === t.tool}
            onClick={() => setTool(t.tool)}
            disabled={state !== "ready"}
          >
            {t.label} <kbd>{t.key}</kbd>
          </button>
        ))}
        <button type="button" onClick={() => (controller?.undoDrawing(), recount())} disabled={state !== "ready"}>
          Undo <kbd>U</kbd> / <kbd>Ctrl+Z</kbd>
        </button>
        <button type="button" onClick={() => (controller?.clearDrawing(), recount())} disabled={state !== "ready"}>
          Clear
        </button>
        <p className="muted small" data-drawn-voxels={drawn.missed + drawn.spurious}>
          Drawn: {drawn.missed} voxels missed lesion (orange), {drawn.spurious} voxels spurious relevance
          (magenta).
        </p>
      </fieldset>
      <form className="review-form" onSubmit={submit} noValidate>
        <fieldset>
          <legend>Does the pathological (red) relevance lie on the lesions?</legend>
          {[1, 2, 3, 4, 5].map((r) => (
            <label key={r} className="inline">
              <input
                type="radio"
                name="rating"
                value={r}
                checked={form.rating === String(r)}
                onChange={() => setForm({ ...form, rating: String(r) })}
              />{" "}
              {RATING_LABELS[r]}
            </label>
          ))}
          {errors.rating ? <p className="error small">{errors.rating}</p> : null}
        </fieldset>
        <fieldset>
          <legend>Would you trust this decision?</legend>
          {(["yes", "no"] as const).map((v) => (
            <label key={v} className="inline">
              <input
                type="radio"
                name="trust"
                value={v}
                checked={form.trust === v}
                onChange={() => setForm({ ...form, trust: v })}
              />{" "}
              {v}
            </label>
          ))}
          {errors.trust ? <p className="error small">{errors.trust}</p> : null}
        </fieldset>
        <label>
          Comment
          <textarea name="comment" value={form.comment} onChange={(e) => setForm({ ...form, comment: e.target.value })} />
        </label>
        {errors.comment ? <p className="error small">{errors.comment}</p> : null}
        {submitError ? (
          <p className="error" role="alert">
            {submitError}
          </p>
        ) : null}
        <button type="submit" disabled={busy}>
          {busy ? "Saving…" : "Submit review"}
        </button>
      </form>
    </div>
  );
}
