import { describe, expect, it } from "vitest";
import { SHORTCUT_HELP, VIEW_MODES, isTypingTarget, shortcutFor } from "./shortcuts";

describe("shortcutFor", () => {
  it("maps the documented keys to their actions", () => {
    expect(shortcutFor({ key: "1" })).toEqual({ kind: "view", view: "axial" });
    expect(shortcutFor({ key: "r" })).toEqual({ kind: "view", view: "render" });
    expect(shortcutFor({ key: "5" })).toEqual({ kind: "view", view: "multiplanar3d" });
    expect(shortcutFor({ key: "P" })).toEqual({ kind: "toggle", layer: "positive" });
    expect(shortcutFor({ key: "h" })).toEqual({ kind: "toggle", layer: "negative" });
    expect(shortcutFor({ key: "l" })).toEqual({ kind: "toggle", layer: "lesion" });
    expect(shortcutFor({ key: "]" })).toEqual({ kind: "threshold", sign: "positive", direction: 1 });
    expect(shortcutFor({ key: "{" })).toEqual({ kind: "threshold", sign: "negative", direction: -1 });
    expect(shortcutFor({ key: "?" })).toEqual({ kind: "help", open: "toggle" });
    expect(shortcutFor({ key: "Escape" })).toEqual({ kind: "help", open: false });
    expect(shortcutFor({ key: "q" })).toBeNull();
    expect(shortcutFor({ key: "Shift" })).toBeNull();
  });

  it("lists every key of the help overlay in the table, and every view", () => {
    for (const row of SHORTCUT_HELP) {
      for (const k of row.keys) expect(shortcutFor({ key: k === "Esc" ? "Escape" : k }), k).not.toBeNull();
    }
    const views = new Set(
      ["1", "2", "3", "4", "5", "6"].map((k) => {
        const action = shortcutFor({ key: k });
        return action?.kind === "view" ? action.view : null;
      }),
    );
    expect(views).toEqual(new Set(VIEW_MODES.map((m) => m.value)));
  });

  it("ignores chords and keys typed into fields", () => {
    expect(shortcutFor({ key: "p", ctrlKey: true })).toBeNull();
    expect(shortcutFor({ key: "p", altKey: true })).toBeNull();
    expect(isTypingTarget({ tagName: "INPUT", type: "text" } as unknown as EventTarget)).toBe(true);
    expect(isTypingTarget({ tagName: "INPUT", type: "range" } as unknown as EventTarget)).toBe(false);
    expect(isTypingTarget({ tagName: "DIV", isContentEditable: true } as unknown as EventTarget)).toBe(true);
    expect(isTypingTarget({ tagName: "CANVAS" } as unknown as EventTarget)).toBe(false);
    expect(isTypingTarget(null)).toBe(false);
  });
});
