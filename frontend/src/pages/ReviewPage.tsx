// /review?project=ID: a clinician's queue of maps to review (blinded by default), the viewer with
// drawing tools for corrections, the rating form, the CSV export and the agreement panel.
// Maps are named by their queue item tokens only: in a blinded round the server sends no run,
// method or map id, and the page needs none (map, rating and correction go by token or review).
import { useCallback, useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import { readStats } from "../api/types";
import {
  reviewCorrectionUrl,
  reviewItemDisplayUrl,
  reviewsCsvUrl,
  subjectImageUrl,
  subjectMaskDrawingUrl,
} from "../api/urls";
import { useAuth } from "../auth/AuthContext";
import { formatDate } from "../format";
import { useAsync } from "../hooks";
import {
  CORRECTION_COLORMAP,
  DRAW_SHORTCUT_HELP,
  DRAW_TOOLS,
  type DrawTool,
  EMPTY_REVIEW_FORM,
  PEN_VALUE,
  RATING_LABELS,
  type ReviewFormErrors,
  type ReviewFormValues,
  type ReviewQueueItem,
  agreementSummary,
  countLabels,
  formatKappa,
  formatPercent,
  kappaStrength,
  keyAction,
  pickCurrent,
  queueRows,
  queueSummary,
  type ReviewedMap,
  type SubmittedReview,
  reviewsOf,
  validateReviewForm,
} from "../review/review";
import { ShortcutHelp } from "../viewer/ShortcutHelp";
import { isTypingTarget } from "../viewer/shortcuts";
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
  const project = projectList.find((p) => p.id === projectId) ?? null;
  const [roundError, setRoundError] = useState<string | null>(null);
  const queue = useAsync(
    () => (projectId === null ? Promise.resolve(null) : api.reviews.queue(projectId, blinded)),
    [projectId, blinded],
  );
  const [wanted, setWanted] = useState<string | null>(null);
  const [saved, setSaved] = useState<{ id: number; correction: boolean; earlier: number } | null>(null);
  // A map this user has reviewed, opened again (by its item token) to amend the review: a new
  // version is added. Blinded reviewers get no map id, so reopening goes by token only.
  const [reopened, setReopened] = useState<string | null>(null);
  const { user } = useAuth();
  const submitted = useAsync(async () => (await api.reviews.list()).data, [saved?.id]);
  const mine = reviewsOf(submitted.data ?? [], user?.id ?? null);
  const agreement = useAsync(
    () => (projectId === null ? Promise.resolve(null) : api.reviews.agreement(projectId)),
    [projectId, saved?.id],
  );
  const items = queue.data?.data ?? [];
  const current = pickCurrent(items, wanted);
  // The server decides: a blinded round stays blinded whatever this page asks for.
  const shownBlinded = queue.data?.blinded ?? blinded;
  const enforced = queue.data?.enforced ?? false;
  const rows = queueRows(items, shownBlinded);

  const onSaved = useCallback(
    (id: number, correction: boolean, earlier: number) => {
      setSaved({ id, correction, earlier });
      setWanted(null);
      setReopened(null);
      queue.reload();
    },
    [queue],
  );
  const reopenedReview = reopened === null ? null : (mine.find((m) => m.item === reopened) ?? null);

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
              checked={shownBlinded}
              disabled={enforced}
              onChange={(e) => {
                setWanted(null);
                setBlinded(e.target.checked);
              }}
            />{" "}
            Blinded (hide run names, shuffled order)
            {enforced ? <span className="muted small"> — this project's review round is blinded</span> : null}
          </label>
          {project?.role === "admin" ? (
            <button
              type="button"
              data-review-round={project.review_blinded ? "blinded" : "open"}
              title="Blinded: the project's clinicians see no run, method or map id (enforced by the server)"
              onClick={async () => {
                setRoundError(null);
                try {
                  await api.projects.update(project.id, { review_blinded: !project.review_blinded });
                  projects.reload();
                  queue.reload();
                } catch (error) {
                  setRoundError(errorMessage(error));
                }
              }}
            >
              {project.review_blinded ? "Open the review round" : "Blind the review round"}
            </button>
          ) : null}
          <a href={reviewsCsvUrl()} download className="button-link">
            Export reviews (CSV)
          </a>
        </div>
        {saved ? (
          <p className="note" role="status" data-review-status="saved" data-review-id={saved.id}>
            Saved review #{saved.id}
            {saved.correction ? " with its correction" : ""}
            {saved.earlier > 0
              ? ` (amends your review of this map; ${saved.earlier} earlier version${saved.earlier > 1 ? "s" : ""} kept)`
              : ""}
            .
          </p>
        ) : null}
      </header>
      {queue.error ? <p className="error">{errorMessage(queue.error)}</p> : null}
      {roundError ? <p className="error">{roundError}</p> : null}
      <div className="review-layout">
        <nav className="review-queue" aria-label="Review queue">
          <p className="muted small">{queue.data ? queueSummary(items.length, queue.data.reviewed) : "Loading…"}</p>
          <ol>
            {rows.map((row) => (
              <li key={row.item}>
                <button
                  type="button"
                  className={!reopenedReview && current?.item === row.item ? "queue-item current" : "queue-item"}
                  aria-current={!reopenedReview && current?.item === row.item ? "true" : undefined}
                  data-item={row.item}
                  onClick={() => {
                    setReopened(null);
                    setWanted(row.item);
                  }}
                >
                  <span className="muted small">{row.position}</span> {row.title}
                  {row.detail ? <span className="muted small"> {row.detail}</span> : null}
                </button>
              </li>
            ))}
          </ol>
          {mine.length > 0 ? (
            <div className="your-reviews" data-testid="your-reviews">
              <h3>Your reviews ({mine.length})</h3>
              <ol>
                {mine.map((m) => (
                  <li key={m.item}>
                    <button
                      type="button"
                      className={reopened === m.item ? "queue-item current" : "queue-item"}
                      aria-current={reopened === m.item ? "true" : undefined}
                      data-reopen-item={m.item}
                      onClick={() => setReopened(m.item)}
                    >
                      {m.name}{" "}
                      <span className="small">
                        rated {m.latest.rating} · {formatDate(m.latest.created_at)}
                        {m.history.length > 1 ? ` · ${m.history.length} versions` : ""}
                      </span>{" "}
                      <span className="small reopen">Reopen</span>
                    </button>
                  </li>
                ))}
              </ol>
            </div>
          ) : null}
        </nav>
        <section className="review-main">
          {reopenedReview ? (
            <ReopenedReview
              key={`reopen-${reopenedReview.item}`}
              reviewed={reopenedReview}
              blinded={shownBlinded}
              onSaved={onSaved}
            />
          ) : current ? (
            <ReviewItem
              key={current.item}
              item={current.item}
              subjectId={current.subject_id}
              stats={current.stats}
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

/**
 * A map the user reviewed, opened again: the server describes it by the user's item token
 * (subject and display statistics, blinded as the queue is), and the review goes by that token.
 */
function ReopenedReview({
  reviewed,
  blinded,
  onSaved,
}: {
  reviewed: ReviewedMap;
  blinded: boolean;
  onSaved: (reviewId: number, correction: boolean, earlier: number) => void;
}) {
  const described = useAsync(() => api.reviews.item(reviewed.item, blinded), [reviewed.item, blinded]);
  if (described.error) {
    return (
      <p className="error" role="alert">
        {errorMessage(described.error)}
      </p>
    );
  }
  if (!described.data) return <p className="muted">Loading…</p>;
  return (
    <ReviewItem
      item={reviewed.item}
      subjectId={described.data.subject_id}
      stats={described.data.stats}
      title={`Your review of ${described.data.label}`}
      onSaved={onSaved}
      history={reviewed.history}
    />
  );
}

function ReviewItem({
  item,
  subjectId,
  stats: mapStats,
  title,
  onSaved,
  history = [],
}: {
  item: string;
  subjectId: number;
  stats: ReviewQueueItem["stats"];
  title: string;
  onSaved: (reviewId: number, correction: boolean, earlier: number) => void;
  /** This user's earlier reviews of the map, newest first (amending adds a version). */
  history?: readonly SubmittedReview[];
}) {
  const data = useAsync(async () => ({ subject: await api.subjects.get(subjectId) }), [subjectId]);
  const latest = history[0] ?? null;
  const { hostRef, controller, snapshot } = useViewerController();
  const [tool, setToolState] = useState<DrawTool>("off");
  const [drawn, setDrawn] = useState({ missed: 0, spurious: 0 });
  const [form, setForm] = useState<ReviewFormValues>(() =>
    latest
      ? { rating: String(latest.rating), trust: latest.trust ? "yes" : "no", comment: latest.comment }
      : EMPTY_REVIEW_FORM,
  );
  const [errors, setErrors] = useState<ReviewFormErrors>({});
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const loaded = data.data;

  useEffect(() => {
    if (!controller || !loaded) return;
    const stats = readStats(mapStats);
    void controller.load({
      imageUrl: subjectImageUrl(loaded.subject.id),
      relevance: stats ? { url: reviewItemDisplayUrl(item), stats } : null,
      lesionUrl: loaded.subject.has_mask ? subjectMaskDrawingUrl(loaded.subject.id) : null,
    });
  }, [controller, loaded, item, mapStats]);

  const setTool = useCallback(
    (next: DrawTool) => {
      setToolState(next);
      controller?.setDrawing(next === "off" ? null : PEN_VALUE[next], CORRECTION_COLORMAP);
    },
    [controller],
  );
  const recount = useCallback(() => setDrawn(countLabels(controller?.drawingBitmap())), [controller]);

  // A reopened review with a correction: its drawing comes back, to keep or change.
  const [restored, setRestored] = useState<boolean | null>(null);
  useEffect(() => {
    if (!controller || snapshot.phase !== "ready" || !latest?.has_correction || restored !== null) return;
    void controller.loadDrawing(reviewCorrectionUrl(latest.id), CORRECTION_COLORMAP).then((ok) => {
      setRestored(ok);
      recount();
    });
  }, [controller, snapshot.phase, latest, restored, recount]);

  // The viewer's keys work here as in the viewer (views, layers, thresholds, ?); the drawing
  // keys are letters the viewer does not use. Escape closes the help first, then stops drawing.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape" && controller?.getSnapshot().helpOpen) {
        controller.setHelpOpen(false);
        e.preventDefault();
        return;
      }
      const inTextField = isTypingTarget(e.target);
      const action = keyAction(e.key, { ctrl: e.ctrlKey || e.metaKey, inTextField });
      if (action) {
        e.preventDefault();
        if (action.kind === "undo") {
          controller?.undoDrawing();
          recount();
        } else setTool(action.tool);
        return;
      }
      if (controller?.handleKey(e)) e.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [controller, setTool, recount]);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const result = validateReviewForm(form, item);
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
      onSaved(review.id, Boolean(nifti), history.length);
    } catch (error) {
      setSubmitError(errorMessage(error));
    } finally {
      setBusy(false);
    }
  };

  const state = data.error ? "error" : loaded ? snapshot.phase : "loading";
  return (
    <div className="review-item" data-item={item}>
      <h2>{title}</h2>
      {latest ? (
        <div className="note review-history" data-testid="review-history">
          <p>
            You reviewed this map; submitting again adds a new version (the latest counts) and keeps the earlier
            ones{latest.has_correction ? (restored === false ? "; your earlier correction could not be loaded" : "; your earlier correction is loaded below to keep or change") : ""}.
          </p>
          <ol>
            {history.map((r) => (
              <li key={r.id} data-review-id={r.id}>
                {formatDate(r.created_at)}: rating {r.rating}, trust {r.trust ? "yes" : "no"}
                {r.has_correction ? ", with a correction" : ""}
                {r.comment ? ` – “${r.comment}”` : ""}
              </li>
            ))}
          </ol>
        </div>
      ) : null}
      <section
        className="viewer review-viewer"
        data-viewer-state={state}
        data-viewer-view={snapshot.view}
        aria-busy={state === "loading"}
      >
        <div className="viewer-main" onPointerUp={recount}>
          <div className="viewer-canvas-host" ref={hostRef} />
          {snapshot.helpOpen ? (
            <ShortcutHelp onClose={() => controller?.setHelpOpen(false)} extra={DRAW_SHORTCUT_HELP} />
          ) : null}
          {data.error || snapshot.error ? (
            <p className="error viewer-error" role="alert">
              {data.error ? errorMessage(data.error) : snapshot.error}
            </p>
          ) : null}
          <p className="location muted small">{snapshot.location || "\u00a0"}</p>
        </div>
        <aside className="viewer-side review-side">
          <fieldset className="draw-tools" data-draw-tool={tool}>
            <legend>Corrections</legend>
            <div className="draw-buttons">
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
                Undo <kbd>U</kbd>
              </button>
              <button type="button" onClick={() => (controller?.clearDrawing(), recount())} disabled={state !== "ready"}>
                Clear
              </button>
            </div>
            <p className="muted small" data-drawn-voxels={drawn.missed + drawn.spurious}>
              Drawn on the MR grid: {drawn.missed} voxels missed lesion (orange), {drawn.spurious} spurious (magenta).
            </p>
          </fieldset>
          <form className="review-form" onSubmit={submit} noValidate>
            <fieldset>
              <legend>Does the pathological relevance lie on the lesions?</legend>
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
              <textarea
                name="comment"
                rows={2}
                value={form.comment}
                onChange={(e) => setForm({ ...form, comment: e.target.value })}
              />
            </label>
            {errors.comment ? <p className="error small">{errors.comment}</p> : null}
            {submitError ? (
              <p className="error" role="alert">
                {submitError}
              </p>
            ) : null}
            <button type="submit" disabled={busy}>
              {busy ? "Saving…" : latest ? "Submit amended review" : "Submit review"}
            </button>
          </form>
          <details className="review-display">
            <summary>Display: layers, thresholds, colours</summary>
            <ViewerControls controller={controller} snapshot={snapshot} />
            <Colorbar thresholds={snapshot.thresholds} scale={snapshot.colourScale} />
          </details>
          <button
            type="button"
            className="small-button"
            aria-pressed={snapshot.helpOpen}
            onClick={() => controller?.setHelpOpen(!snapshot.helpOpen)}
            title="Keyboard shortcuts (?)"
          >
            Shortcuts <kbd>?</kbd>
          </button>
        </aside>
      </section>
    </div>
  );
}
