// Pure parts of the review page: the form, the queue display, agreement formatting, the drawing
// tools and their keyboard shortcuts.
import type { components } from "../api/schema";

export type ReviewQueueItem = components["schemas"]["ReviewQueueItem"];
export type Agreement = components["schemas"]["Agreement"];
export type RaterPair = components["schemas"]["RaterPair"];
export type ReviewCreate = components["schemas"]["ReviewCreate"];

// --- the form ------------------------------------------------------------------------------

export interface ReviewFormValues {
  rating: string; // "" until chosen, "1".."5"
  trust: "" | "yes" | "no";
  comment: string;
}

export const EMPTY_REVIEW_FORM: ReviewFormValues = { rating: "", trust: "", comment: "" };
export const COMMENT_MAX = 5000;

export const RATING_LABELS: Record<number, string> = {
  1: "1 – not on the lesions",
  2: "2 – mostly off the lesions",
  3: "3 – partly on the lesions",
  4: "4 – mostly on the lesions",
  5: "5 – on the lesions",
};

export type ReviewFormErrors = Partial<Record<keyof ReviewFormValues, string>>;

/** The request body: the map is named by its queue item token (the server blinds by token). */
export function validateReviewForm(
  values: ReviewFormValues,
  item: string,
): { ok: true; value: ReviewCreate } | { ok: false; errors: ReviewFormErrors } {
  const errors: ReviewFormErrors = {};
  const rating = Number(values.rating);
  if (values.rating.trim() === "") errors.rating = "Choose a rating from 1 to 5.";
  else if (!Number.isInteger(rating) || rating < 1 || rating > 5) errors.rating = "The rating must be a whole number from 1 to 5.";
  if (values.trust !== "yes" && values.trust !== "no") errors.trust = "Say whether you would trust this decision.";
  const comment = values.comment.trim();
  if (comment.length > COMMENT_MAX) errors.comment = `The comment is longer than ${COMMENT_MAX} characters.`;
  if (Object.keys(errors).length > 0) return { ok: false, errors };
  return { ok: true, value: { item, rating, trust: values.trust === "yes", comment } };
}

// --- the queue -----------------------------------------------------------------------------

export interface QueueRow {
  item: string; // the map's opaque token for this user
  subjectId: number;
  position: string; // "1 / 7"
  title: string;
  detail: string | null; // run and method, unblinded only
}

/**
 * Rows in the server's order (already shuffled per user when blinded); names only when unblinded.
 * A blinded answer carries no run, method or map id at all: the server leaves them out.
 */
export function queueRows(items: readonly ReviewQueueItem[], blinded: boolean): QueueRow[] {
  return items.map((item, i) => ({
    item: item.item,
    subjectId: item.subject_id,
    position: `${i + 1} / ${items.length}`,
    title: item.label,
    detail:
      blinded || item.run_name == null
        ? null
        : `run ${item.run_name} (#${item.run_id ?? "?"}) · ${item.method ?? "?"} · map #${item.attribution_id ?? "?"}`,
  }));
}

/** The item to show: the requested one (by token) while it is in the queue, else the first. */
export function pickCurrent(items: readonly ReviewQueueItem[], wanted: string | null): ReviewQueueItem | null {
  return items.find((i) => i.item === wanted) ?? items[0] ?? null;
}

export function queueSummary(count: number, reviewed: number): string {
  if (count === 0) return reviewed > 0 ? `All ${reviewed} maps reviewed.` : "No maps to review in this project.";
  return `${count} map${count === 1 ? "" : "s"} to review, ${reviewed} done.`;
}

// --- agreement -----------------------------------------------------------------------------

/** Kappa with two decimals and a sign for negatives; an em dash when undefined. */
export function formatKappa(kappa: number | null | undefined): string {
  if (kappa == null || !Number.isFinite(kappa)) return "—";
  const text = kappa.toFixed(2);
  return text === "-0.00" ? "0.00" : text.replace("-", "−");
}

/** Landis & Koch's wording for a kappa value. */
export function kappaStrength(kappa: number | null | undefined): string {
  if (kappa == null || !Number.isFinite(kappa)) return "undefined";
  if (kappa < 0) return "poor";
  if (kappa <= 0.2) return "slight";
  if (kappa <= 0.4) return "fair";
  if (kappa <= 0.6) return "moderate";
  if (kappa <= 0.8) return "substantial";
  return "almost perfect";
}

export function formatPercent(fraction: number | null | undefined): string {
  if (fraction == null || !Number.isFinite(fraction)) return "—";
  return `${Math.round(fraction * 1000) / 10} %`;
}

export function agreementSummary(a: Agreement): string {
  if (a.n_maps === 0) return "No map has been rated by two raters yet.";
  return `${a.n_maps} map${a.n_maps === 1 ? "" : "s"} rated by at least two of ${a.n_raters} raters (${a.n_reviews} reviews).`;
}

// --- drawing tools -------------------------------------------------------------------------

export type DrawTool = "off" | "missed" | "spurious" | "eraser";

/** NiiVue pen value of each tool: 1 missed lesion, 2 spurious relevance, 0 erases. */
export const PEN_VALUE: Record<Exclude<DrawTool, "off">, number> = { missed: 1, spurious: 2, eraser: 0 };

// The drawing keys are letters the viewer does not use (viewer/shortcuts.ts): 1-6 choose the
// view, p/h/o/l the layers, ? the help, the same on the review page as in the viewer.
export const DRAW_TOOLS: { tool: DrawTool; label: string; key: string }[] = [
  { tool: "off", label: "Navigate", key: "Esc" },
  { tool: "missed", label: "Pen 1: missed lesion", key: "D" },
  { tool: "spurious", label: "Pen 2: spurious relevance", key: "X" },
  { tool: "eraser", label: "Eraser", key: "E" },
];

/** The review page's own rows of the keyboard help (after the viewer's). */
export const DRAW_SHORTCUT_HELP: readonly { keys: string[]; description: string }[] = [
  { keys: ["d"], description: "Pen 1: draw a missed lesion (orange)" },
  { keys: ["x"], description: "Pen 2: draw spurious relevance (magenta)" },
  { keys: ["e"], description: "Eraser" },
  { keys: ["u", "Ctrl+Z"], description: "Undo the last stroke" },
  { keys: ["Esc"], description: "Navigate (stop drawing), or close this help" },
];

export type DrawAction = { kind: "tool"; tool: DrawTool } | { kind: "undo" } | null;

/** The action of a key press, ignoring presses in text fields and with modifiers other than Ctrl+Z. */
export function keyAction(key: string, opts: { ctrl?: boolean; inTextField?: boolean } = {}): DrawAction {
  if (opts.inTextField) return null;
  if (opts.ctrl) return key.toLowerCase() === "z" ? { kind: "undo" } : null;
  switch (key) {
    case "d":
    case "D":
      return { kind: "tool", tool: "missed" };
    case "x":
    case "X":
      return { kind: "tool", tool: "spurious" };
    case "e":
    case "E":
      return { kind: "tool", tool: "eraser" };
    case "Escape":
      return { kind: "tool", tool: "off" };
    case "u":
    case "U":
      return { kind: "undo" };
    default:
      return null;
  }
}

/** Voxels per label in a drawing bitmap (1 missed lesion, 2 spurious relevance). */
export function countLabels(bitmap: ArrayLike<number> | null | undefined): { missed: number; spurious: number } {
  let missed = 0;
  let spurious = 0;
  if (bitmap) {
    for (let i = 0; i < bitmap.length; i++) {
      if (bitmap[i] === 1) missed++;
      else if (bitmap[i] === 2) spurious++;
    }
  }
  return { missed, spurious };
}

/** NiiVue drawing colormap: neither red/blue (relevance) nor green (lesion outline). */
export const CORRECTION_COLORMAP = {
  R: [0, 255, 255],
  G: [0, 170, 0],
  B: [0, 0, 255],
  A: [0, 255, 255],
  I: [0, 1, 2],
  labels: ["", "missed lesion", "spurious relevance"],
};

export type SubmittedReview = components["schemas"]["ReviewPublic"];

/** One map this user reviewed: the latest version first, then the earlier ones. */
export interface ReviewedMap {
  /** The user's opaque token of the map: reopening goes by it (blinded reviewers get no map id). */
  item: string;
  /** What the list calls the map: its blind label, or "map #id" in an open round. */
  name: string;
  latest: SubmittedReview;
  history: SubmittedReview[];
}

/**
 * The user's reviews grouped by map (their item token: the server gives it with each of their
 * own reviews, blinded or not), newest map first; each map's versions newest first.
 */
export function reviewsOf(reviews: readonly SubmittedReview[], userId: number | null): ReviewedMap[] {
  if (userId === null) return [];
  const byMap = new Map<string, SubmittedReview[]>();
  for (const r of reviews) {
    if (r.reviewer_id !== userId || !r.item) continue;
    const list = byMap.get(r.item) ?? [];
    list.push(r);
    byMap.set(r.item, list);
  }
  return [...byMap.entries()]
    .map(([item, list]) => {
      const history = [...list].sort((a, b) => b.id - a.id);
      const latest = history[0];
      const name = latest.label ?? (latest.attribution_id != null ? `map #${latest.attribution_id}` : "map");
      return { item, name, latest, history };
    })
    .sort((a, b) => b.latest.id - a.latest.id);
}
