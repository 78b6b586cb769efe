import { describe, expect, it } from "vitest";
import { shortcutFor } from "../viewer/shortcuts";
import {
  type Agreement,
  type ReviewQueueItem,
  agreementSummary,
  countLabels,
  formatKappa,
  formatPercent,
  kappaStrength,
  keyAction,
  reviewsOf,
  pickCurrent,
  queueRows,
  queueSummary,
  validateReviewForm,
} from "./review";

describe("validateReviewForm", () => {
  it("asks for a rating and trust", () => {
    const result = validateReviewForm({ rating: "", trust: "", comment: "" }, "tok3");
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors.rating).toMatch(/1 to 5/);
      expect(result.errors.trust).toMatch(/trust/);
    }
  });
  it("refuses ratings outside 1-5 and long comments", () => {
    const bad = validateReviewForm({ rating: "6", trust: "yes", comment: "x".repeat(5001) }, "tok3");
    expect(bad.ok).toBe(false);
    if (!bad.ok) {
      expect(bad.errors.rating).toBeDefined();
      expect(bad.errors.comment).toMatch(/5000/);
    }
    expect(validateReviewForm({ rating: "2.5", trust: "no", comment: "" }, "tok3").ok).toBe(false);
  });
  it("builds the request body, naming the map by its item token only", () => {
    expect(validateReviewForm({ rating: "4", trust: "no", comment: "  ok " }, "a1b2")).toEqual({
      ok: true,
      value: { item: "a1b2", rating: 4, trust: false, comment: "ok" },
    });
  });
});

const stats = { min: -1, max: 2, positive_mass: null, negative_mass: null, mean_abs: 0.5 };
// As a blinded queue comes from the server: no map id, run or method.
const items: ReviewQueueItem[] = [
  { item: "t7", attribution_id: null, subject_id: 2, label: "Map 3FA9C1", stats, run_id: null, run_name: null, method: null },
  { item: "t3", attribution_id: null, subject_id: 1, label: "Map 00B2D4", stats, run_id: null, run_name: null, method: null },
];

describe("queue display", () => {
  it("keeps the server's (shuffled) order and hides runs when blinded", () => {
    const rows = queueRows(items, true);
    expect(rows.map((r) => r.item)).toEqual(["t7", "t3"]);
    expect(rows.map((r) => r.position)).toEqual(["1 / 2", "2 / 2"]);
    expect(rows.every((r) => r.detail === null)).toBe(true);
  });
  it("names run and method when not blinded", () => {
    const open = [{ ...items[0], attribution_id: 7, run_id: 5, run_name: "lc", method: "ig", label: "lc · ig #7" }];
    expect(queueRows(open, false)[0].detail).toBe("run lc (#5) · ig · map #7");
    // a blinded answer never shows names, even if asked unblinded
    expect(queueRows(items, false)[0].detail).toBeNull();
  });
  it("picks the wanted item or the first", () => {
    expect(pickCurrent(items, "t3")?.item).toBe("t3");
    expect(pickCurrent(items, "gone")?.item).toBe("t7");
    expect(pickCurrent([], "t3")).toBeNull();
  });
  it("summarises", () => {
    expect(queueSummary(2, 1)).toBe("2 maps to review, 1 done.");
    expect(queueSummary(0, 4)).toBe("All 4 maps reviewed.");
    expect(queueSummary(0, 0)).toMatch(/No maps/);
  });
});

describe("agreement formatting", () => {
  it("formats kappa", () => {
    expect(formatKappa(6 / 7)).toBe("0.86");
    expect(formatKappa(-0.25)).toBe("−0.25");
    expect(formatKappa(-0.001)).toBe("0.00");
    expect(formatKappa(null)).toBe("—");
    expect(formatKappa(Number.NaN)).toBe("—");
  });
  it("names the strength", () => {
    expect(kappaStrength(6 / 7)).toBe("almost perfect");
    expect(kappaStrength(0.5)).toBe("moderate");
    expect(kappaStrength(-0.1)).toBe("poor");
    expect(kappaStrength(null)).toBe("undefined");
  });
  it("formats percentages and the summary", () => {
    expect(formatPercent(0.75)).toBe("75 %");
    expect(formatPercent(2 / 3)).toBe("66.7 %");
    expect(formatPercent(null)).toBe("—");
    const a: Agreement = {
      project_id: 1,
      run_id: null,
      n_maps: 4,
      n_reviews: 10,
      n_raters: 3,
      pairs: [],
      mean_kappa: 0.5,
      trust_agreement: 0.75,
    };
    expect(agreementSummary(a)).toBe("4 maps rated by at least two of 3 raters (10 reviews).");
    expect(agreementSummary({ ...a, n_maps: 0 })).toMatch(/No map/);
  });
});

describe("drawing", () => {
  it("maps keys to tools", () => {
    expect(keyAction("d")).toEqual({ kind: "tool", tool: "missed" });
    expect(keyAction("x")).toEqual({ kind: "tool", tool: "spurious" });
    // 1 and 2 are views, as in the viewer: not pens.
    expect(keyAction("1")).toBeNull();
    expect(keyAction("2")).toBeNull();
    expect(keyAction("e")).toEqual({ kind: "tool", tool: "eraser" });
    expect(keyAction("Escape")).toEqual({ kind: "tool", tool: "off" });
    expect(keyAction("z", { ctrl: true })).toEqual({ kind: "undo" });
    expect(keyAction("d", { inTextField: true })).toBeNull();
    expect(keyAction("q")).toBeNull();
  });
  it("uses no key of the viewer's shortcuts, which keep their meaning on the review page", () => {
    for (const key of ["d", "x", "e", "u", "D", "X", "E", "U"]) expect(shortcutFor({ key })).toBeNull();
    expect(shortcutFor({ key: "1" })).toEqual({ kind: "view", view: "axial" });
  });
  it("counts labels", () => {
    expect(countLabels(Uint8Array.from([0, 1, 1, 2, 0]))).toEqual({ missed: 2, spurious: 1 });
    expect(countLabels(null)).toEqual({ missed: 0, spurious: 0 });
  });
});

describe("reviewsOf", () => {
  const r = (id: number, item: string | null, reviewer_id: number, rating = 3, extra: object = {}) => ({
    id,
    attribution_id: null,
    item,
    label: item ? `Map ${item.toUpperCase()}` : null,
    reviewer_id,
    rating,
    trust: true,
    comment: "",
    created_at: "",
    has_correction: false,
    ...extra,
  });
  it("groups the user's reviews by map token, newest version and newest map first", () => {
    const out = reviewsOf([r(1, "t7", 2), r(2, "t8", 2), r(3, "t7", 2, 5), r(4, "t7", 9)], 2);
    expect(out.map((m) => m.item)).toEqual(["t7", "t8"]);
    expect(out[0].name).toBe("Map T7");
    expect(out[0].latest.rating).toBe(5);
    expect(out[0].history.map((h) => h.id)).toEqual([3, 1]);
    expect(reviewsOf([r(1, "t7", 2)], null)).toEqual([]);
  });
  it("names a map of an open round by its id, and skips reviews without a token", () => {
    const open = reviewsOf([r(1, "t7", 2, 3, { attribution_id: 7, label: null }), r(2, null, 2)], 2);
    expect(open.map((m) => [m.item, m.name])).toEqual([["t7", "map #7"]]);
  });
});
