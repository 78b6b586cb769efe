// The viewer's keyboard shortcuts: a pure key -> action table (Vitest checks it), the help
// overlay's rows, and the guard that keeps typing in form fields from triggering anything.

/** The layouts a viewer can show; "multiplanar3d" adds the 3D render as a fourth tile. */
export type ViewMode = "axial" | "coronal" | "sagittal" | "multiplanar" | "multiplanar3d" | "render";

export const VIEW_MODES: readonly { value: ViewMode; label: string }[] = [
  { value: "multiplanar", label: "Multiplanar" },
  { value: "multiplanar3d", label: "Multiplanar + 3D" },
  { value: "axial", label: "Axial" },
  { value: "coronal", label: "Coronal" },
  { value: "sagittal", label: "Sagittal" },
  { value: "render", label: "3D render" },
];

export type ViewerAction =
  | { kind: "view"; view: ViewMode }
  | { kind: "toggle"; layer: "positive" | "negative" | "relevance" | "lesion" }
  | { kind: "threshold"; sign: "positive" | "negative" | "both"; direction: 1 | -1 }
  | { kind: "focus"; target: "lesion" | "peak" }
  | { kind: "help"; open: boolean | "toggle" };

/** One row of the help overlay: the keys (as printed) and what they do. */
export interface ShortcutHelp {
  keys: string[];
  description: string;
}

/** Key (KeyboardEvent.key, letters lower case) -> action. */
const TABLE: Record<string, ViewerAction> = {
  "1": { kind: "view", view: "axial" },
  "2": { kind: "view", view: "coronal" },
  "3": { kind: "view", view: "sagittal" },
  "4": { kind: "view", view: "multiplanar" },
  "5": { kind: "view", view: "multiplanar3d" },
  "6": { kind: "view", view: "render" },
  a: { kind: "view", view: "axial" },
  c: { kind: "view", view: "coronal" },
  s: { kind: "view", view: "sagittal" },
  m: { kind: "view", view: "multiplanar" },
  b: { kind: "view", view: "multiplanar3d" },
  r: { kind: "view", view: "render" },
  p: { kind: "toggle", layer: "positive" },
  h: { kind: "toggle", layer: "negative" },
  o: { kind: "toggle", layer: "relevance" },
  l: { kind: "toggle", layer: "lesion" },
  "]": { kind: "threshold", sign: "positive", direction: 1 },
  "[": { kind: "threshold", sign: "positive", direction: -1 },
  "}": { kind: "threshold", sign: "negative", direction: 1 },
  "{": { kind: "threshold", sign: "negative", direction: -1 },
  "+": { kind: "threshold", sign: "both", direction: 1 },
  "=": { kind: "threshold", sign: "both", direction: 1 },
  "-": { kind: "threshold", sign: "both", direction: -1 },
  g: { kind: "focus", target: "lesion" },
  f: { kind: "focus", target: "peak" },
  "?": { kind: "help", open: "toggle" },
  Escape: { kind: "help", open: false },
};

export const SHORTCUT_HELP: readonly ShortcutHelp[] = [
  { keys: ["1", "a"], description: "Axial slice" },
  { keys: ["2", "c"], description: "Coronal slice" },
  { keys: ["3", "s"], description: "Sagittal slice" },
  { keys: ["4", "m"], description: "Multiplanar (three slices)" },
  { keys: ["5", "b"], description: "Multiplanar + 3D render" },
  { keys: ["6", "r"], description: "3D render" },
  { keys: ["p"], description: "Show / hide pathological relevance (red)" },
  { keys: ["h"], description: "Show / hide healthy relevance (blue)" },
  { keys: ["o"], description: "Show / hide all relevance" },
  { keys: ["l"], description: "Show / hide the lesion outline (green)" },
  { keys: ["]", "["], description: "Raise / lower the red threshold" },
  { keys: ["}", "{"], description: "Raise / lower the blue threshold" },
  { keys: ["+", "-"], description: "Raise / lower both thresholds" },
  { keys: ["g"], description: "Go to the lesion" },
  { keys: ["f"], description: "Go to the strongest pathological relevance" },
  { keys: ["?"], description: "Show / hide this help" },
  { keys: ["Esc"], description: "Close this help" },
];

/** The parts of a KeyboardEvent the mapping reads. */
export interface KeyLike {
  key: string;
  ctrlKey?: boolean;
  metaKey?: boolean;
  altKey?: boolean;
  /** The focused element; shortcuts stay off while the user types in a field. */
  target?: EventTarget | null;
}

const TYPING = new Set(["INPUT", "TEXTAREA", "SELECT"]);

/** True when a key press goes to a text field, a select or an editable element. */
export function isTypingTarget(target: EventTarget | null | undefined): boolean {
  const el = target as { tagName?: string; isContentEditable?: boolean; type?: string } | null | undefined;
  if (!el?.tagName) return false;
  if (el.isContentEditable) return true;
  if (!TYPING.has(el.tagName.toUpperCase())) return false;
  // Checkboxes and sliders do not take text: the layer keys still work after clicking one.
  return !(el.tagName.toUpperCase() === "INPUT" && ["checkbox", "radio", "range", "button"].includes(el.type ?? ""));
}

/** The action of a key press, or null (modifier chords and typing are left alone). */
export function shortcutFor(event: KeyLike): ViewerAction | null {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  if (isTypingTarget(event.target)) return null;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  return TABLE[key] ?? null;
}

/** How far one key press moves a threshold: this fraction of the sign's peak. */
export const THRESHOLD_STEP_FRACTION = 0.05;
