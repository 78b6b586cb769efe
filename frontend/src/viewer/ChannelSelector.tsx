// "Image: T1w | FLAIR" and "Map: sum | T1w | FLAIR" for a multi-modal subject (channels.ts).
import type { ChannelSelection } from "./channels";

export function ChannelSelector({
  channels,
  selection,
  showMap,
  disabled,
  onChange,
}: {
  /** The subject's modalities in channel order (two or more). */
  channels: readonly string[];
  selection: ChannelSelection;
  /** Whether the map has per-channel maps to choose from (a classifier's map, not an epoch's). */
  showMap: boolean;
  disabled: boolean;
  onChange: (selection: ChannelSelection) => void;
}) {
  return (
    <section className="viewer-controls channel-selector" aria-label="Channels" data-testid="channel-selector">
      <label className="slider">
        <span>Image</span>
        <select
          name="image-channel"
          value={selection.image}
          disabled={disabled}
          onChange={(e) => onChange({ ...selection, image: Number(e.target.value) })}
        >
          {channels.map((name, index) => (
            <option key={name} value={index}>
              {name}
            </option>
          ))}
        </select>
      </label>
      {showMap ? (
        <label className="slider">
          <span>Map</span>
          <select
            name="map-channel"
            value={String(selection.map)}
            disabled={disabled}
            onChange={(e) =>
              onChange({ ...selection, map: e.target.value === "sum" ? "sum" : Number(e.target.value) })
            }
          >
            <option value="sum">sum</option>
            {channels.map((name, index) => (
              <option key={name} value={index}>
                {name}
              </option>
            ))}
          </select>
        </label>
      ) : null}
    </section>
  );
}
