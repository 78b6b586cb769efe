// Layer toggles, overlay opacity and one threshold per sign.
import { formatNumber } from "../format";
import { SignSwatch } from "./Colorbar";
import { COLOUR_SCALES, type ColourScaleId } from "./colourScales";
import type { ViewerController, ViewerSnapshot } from "./ViewerController";
import { VIEW_MODES, type ViewMode } from "./shortcuts";

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
      <label className="slider">
        <span>View</span>
        <select
          name="view"
          value={snapshot.view}
          disabled={!ready}
          onChange={(e) => controller?.setView(e.target.value as ViewMode)}
        >
          {VIEW_MODES.map((m) => (
            <option key={m.value} value={m.value}>
              {m.label}
            </option>
          ))}
        </select>
      </label>
      <h2>Layers</h2>
      <label className="check">
        <input
          type="checkbox"
          name="relevance"
          checked={snapshot.showRelevance}
          disabled={!ready || !snapshot.hasRelevance}
          onChange={(e) => controller?.setRelevanceVisible(e.target.checked)}
        />
        Relevance <SignSwatch sign="positive" scale={snapshot.colourScale} />{" "}
        <SignSwatch sign="negative" scale={snapshot.colourScale} />
      </label>
      <div className="sub-checks">
        <label className="check">
          <input
            type="checkbox"
            name="positive"
            checked={snapshot.showPositive}
            disabled={!ready || !snapshot.hasRelevance || !snapshot.showRelevance || !positive}
            onChange={(e) => controller?.setSignVisible("positive", e.target.checked)}
          />
          Pathological <SignSwatch sign="positive" scale={snapshot.colourScale} /> <kbd>p</kbd>
        </label>
        <label className="check">
          <input
            type="checkbox"
            name="negative"
            checked={snapshot.showNegative}
            disabled={!ready || !snapshot.hasRelevance || !snapshot.showRelevance || !negative}
            onChange={(e) => controller?.setSignVisible("negative", e.target.checked)}
          />
          Healthy <SignSwatch sign="negative" scale={snapshot.colourScale} /> <kbd>h</kbd>
        </label>
      </div>
      <label className="check">
        <input
          type="checkbox"
          name="lesion"
          checked={snapshot.showLesion}
          disabled={!ready || !snapshot.hasLesion}
          onChange={(e) => controller?.setLesionVisible(e.target.checked)}
        />
        Lesion outline <span className="swatch swatch-green" /> <kbd>l</kbd>
      </label>
      {snapshot.hasUncertainty ? (
        <label className="check" title="Colours fade where the samples of the map disagree on its sign (sign agreement 1: unchanged; 0.5 or less: black)">
          <input
            type="checkbox"
            name="dim-uncertain"
            checked={snapshot.dimUncertain}
            disabled={!ready || !snapshot.showRelevance}
            onChange={(e) => controller?.setDimUncertain(e.target.checked)}
          />
          Dim uncertain voxels
        </label>
      ) : null}

      <label className="slider">
        <span>Colour scale</span>
        <select
          name="colour-scale"
          value={snapshot.colourScale}
          disabled={!controller}
          onChange={(e) => controller?.setColourScale(e.target.value as ColourScaleId)}
        >
          {Object.values(COLOUR_SCALES).map((s) => (
            <option key={s.id} value={s.id}>
              {s.label}
            </option>
          ))}
        </select>
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
            Pathological ({COLOUR_SCALES[snapshot.colourScale].positive.hue}) threshold <strong>{formatNumber(positive.min)}</strong>
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
            Healthy ({COLOUR_SCALES[snapshot.colourScale].negative.hue}) threshold <strong>−{formatNumber(negative.min)}</strong>
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
        <button
          type="button"
          className="small-button"
          aria-pressed={snapshot.helpOpen}
          onClick={() => controller?.setHelpOpen(!snapshot.helpOpen)}
          title="Keyboard shortcuts (?)"
        >
          Shortcuts <kbd>?</kbd>
        </button>
      </div>
    </section>
  );
}
