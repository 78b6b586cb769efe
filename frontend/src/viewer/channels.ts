// The channel selector of a multi-modal subject: which modality is the base image and which
// channel's map is the overlay ("sum" is the map itself, the sum of the channels' maps). The
// choice lives in the viewer's URL (?image=<index>&map=<index>), like ?attribution and ?run.
import { attributionChannelMapUrl, attributionDisplayUrl, subjectChannelUrl, subjectImageUrl } from "../api/urls";

/** The base image's channel and the overlay's: a channel index, or "sum" (the map itself). */
export interface ChannelSelection {
  image: number;
  map: number | "sum";
}

export const IMAGE_PARAM = "image";
export const MAP_PARAM = "map";

/** The modality names to choose from, or null for a one-channel subject (no selector). */
export function channelChoices(channels: readonly string[] | null | undefined): string[] | null {
  return channels && channels.length > 1 ? [...channels] : null;
}

function readIndex(raw: string | null, count: number): number | null {
  if (raw === null || !/^\d+$/.test(raw)) return null;
  const index = Number(raw);
  return index < count ? index : null;
}

/** The selection in the URL; anything missing, malformed or past the last channel is the default. */
export function readChannelSelection(search: URLSearchParams, count: number): ChannelSelection {
  if (count < 2) return { image: 0, map: "sum" };
  return {
    image: readIndex(search.get(IMAGE_PARAM), count) ?? 0,
    map: readIndex(search.get(MAP_PARAM), count) ?? "sum",
  };
}

/** The URL's search params with the selection written in (defaults are left out). */
export function writeChannelSelection(search: URLSearchParams, selection: ChannelSelection): URLSearchParams {
  const next = new URLSearchParams(search);
  if (selection.image === 0) next.delete(IMAGE_PARAM);
  else next.set(IMAGE_PARAM, String(selection.image));
  if (selection.map === "sum") next.delete(MAP_PARAM);
  else next.set(MAP_PARAM, String(selection.map));
  return next;
}

/** The base volume's URL: channel 0 is the subject's image. */
export function channelImageUrl(subjectId: number, selection: ChannelSelection): string {
  return selection.image === 0 ? subjectImageUrl(subjectId) : subjectChannelUrl(subjectId, selection.image);
}

/**
 * The overlay's URL and whether its stats are the attribution's: the sum is the stored map
 * (display copy, the attribution's stats); a channel's map has its own range, read from the
 * volume once loaded.
 */
export function channelMapSource(
  attributionId: number,
  selection: ChannelSelection,
): { url: string; ownStats: boolean } {
  return selection.map === "sum"
    ? { url: attributionDisplayUrl(attributionId), ownStats: true }
    : { url: attributionChannelMapUrl(attributionId, selection.map), ownStats: false };
}
