// Layer toggles, overlay opacity and one threshold per sign.
import { formatNumber } from "../format";
import type { ViewerController, ViewerSnapshot } from "./ViewerController";

const SLIDER_STEPS = 200;

export function ViewerControls({
  controller,
  snapshot,
}: {
  controller: ViewerController | null;
  snapshot: ViewerSnapshot;
}) {
  const ready = snapshot.phase === "ready" && controller !== null;
  const { positive, negative } = snapshot.thresholds;
  return (
    <section className="viewer-controls" aria-label="Display">
      <h2>Layers</h2>
      <label className="check">
        <input
          type="checkbox"
          name="relevance"
          checked={snapshot.showRelevance}
          disabled={!ready || !snapshot.hasRelevance}
          onChange={(e) => controller?.setRelevanceVisible(e.target.checked)}
        />
        Relevance <span className="swatch swatch-red" /> <span className="swatch swatch-blue" />
      </label>
      <label className="check">
        <input
          type="checkbox"
          name="lesion"
          checked={snapshot.showLesion}
          disabled={!ready || !snapshot.hasLesion}
          onChange={(e) => controller?.setLesionVisible(e.target.checked)}
        />
        Lesion outline <span className="swatch swatch-green" />
      </label>

      <label className="slider">
        <span>Overlay opacity {Math.round(snapshot.opacity * 100)}%</span>
        <input
          type="range"
          name="opacity"
          min={0}
          max={1}
          step={0.05}
          value={snapshot.opacity}
          disabled={!ready || !snapshot.hasRelevance}
          onChange={(e) => controller?.setOpacity(Number(e.target.value))}
        />
      </label>

      {positive ? (
        <label className="slider">
          <span>
            Pathological (red) threshold <strong>{formatNumber(positive.min)}</strong>
          </span>
          <input
            type="range"
            name="threshold-positive"
            min={0}
            max={snapshot.peaks.positive}
            step={snapshot.peaks.positive / SLIDER_STEPS}
            value={positive.min}
            disabled={!ready}
            onChange={(e) =>
              controller?.setWindow("positive", { min: Number(e.target.value), max: positive.max })
            }
          />
        </label>
      ) : null}
      {negative ? (
        <label className="slider">
          <span>
            Healthy (blue) threshold <strong>−{formatNumber(negative.min)}</strong>
          </span>
          <input
            type="range"
            name="threshold-negative"
            min={0}
            max={snapshot.peaks.negative}
            step={snapshot.peaks.negative / SLIDER_STEPS}
            value={negative.min}
            disabled={!ready}
            onChange={(e) =>
              controller?.setWindow("negative", { min: Number(e.target.value), max: negative.max })
            }
          />
        </label>
      ) : null}

      <div className="button-row">
        <button
          type="button"
          className="small-button"
          disabled={!ready || !snapshot.hasLesion}
          onClick={() => controller?.focusLesion()}
        >
          Go to lesion
        </button>
        <button
          type="button"
          className="small-button"
          disabled={!ready || !(snapshot.hasRelevance && snapshot.peaks.positive > 0)}
          onClick={() => controller?.focusPeak()}
        >
          Go to peak
        </button>
      </div>
    </section>
  );
}
