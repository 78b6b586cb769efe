// The keyboard help overlay ("?"), and the hook that sends key presses to a viewer controller.
import { useEffect } from "react";
import type { ViewerController } from "./ViewerController";
import { SHORTCUT_HELP } from "./shortcuts";

/** Sends the page's key presses to `controller` while it exists (shortcuts.ts decides which). */
export function useViewerShortcuts(controller: ViewerController | null): void {
  useEffect(() => {
    if (!controller) return;
    const onKey = (event: KeyboardEvent) => {
      if (controller.handleKey(event)) event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [controller]);
}

export function ShortcutHelp({
  onClose,
  extra = [],
}: {
  onClose: () => void;
  /** More rows after the viewer's (the review page's drawing keys). */
  extra?: readonly { keys: string[]; description: string }[];
}) {
  return (
    <div className="shortcut-help" role="dialog" aria-modal="false" aria-label="Keyboard shortcuts">
      <div className="shortcut-help-head">
        <h2>Keyboard shortcuts</h2>
        <button type="button" className="small-button" onClick={onClose}>
          Close
        </button>
      </div>
      <table className="table">
        <tbody>
          {[...SHORTCUT_HELP, ...extra].map((row) => (
            <tr key={row.description}>
              <td>
                {row.keys.map((k, i) => (
                  <span key={k}>
                    {i > 0 ? " " : null}
                    <kbd>{k}</kbd>
                  </span>
                ))}
              </td>
              <td>{row.description}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
