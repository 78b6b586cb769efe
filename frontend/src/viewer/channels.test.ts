import { describe, expect, it } from "vitest";
import {
  channelChoices,
  channelImageUrl,
  channelMapSource,
  readChannelSelection,
  writeChannelSelection,
} from "./channels";

describe("channel selector", () => {
  it("is hidden for a one-channel subject", () => {
    expect(channelChoices([])).toBeNull();
    expect(channelChoices(undefined)).toBeNull();
    expect(channelChoices(["T1w"])).toBeNull();
    expect(channelChoices(["T1w", "FLAIR"])).toEqual(["T1w", "FLAIR"]);
  });

  it("reads the selection from the URL, falling back to channel 0 and the sum", () => {
    expect(readChannelSelection(new URLSearchParams(""), 2)).toEqual({ image: 0, map: "sum" });
    expect(readChannelSelection(new URLSearchParams("image=1&map=0"), 2)).toEqual({ image: 1, map: 0 });
    expect(readChannelSelection(new URLSearchParams("image=2&map=x"), 2)).toEqual({ image: 0, map: "sum" });
    expect(readChannelSelection(new URLSearchParams("image=1&map=1"), 1)).toEqual({ image: 0, map: "sum" });
  });

  it("writes the selection into the URL, keeping the other params and leaving defaults out", () => {
    const search = new URLSearchParams("attribution=7");
    expect(writeChannelSelection(search, { image: 1, map: 0 }).toString()).toBe("attribution=7&image=1&map=0");
    expect(writeChannelSelection(new URLSearchParams("attribution=7&image=1&map=0"), { image: 0, map: "sum" }).toString()).toBe(
      "attribution=7",
    );
    expect(search.toString()).toBe("attribution=7");
  });

  it("chooses the base image's URL", () => {
    expect(channelImageUrl(4, { image: 0, map: "sum" })).toBe("/api/v1/subjects/4/image.nii.gz");
    expect(channelImageUrl(4, { image: 1, map: "sum" })).toBe("/api/v1/subjects/4/channels/1.nii.gz");
  });

  it("chooses the map: the display map for the sum, the channel route for one channel", () => {
    expect(channelMapSource(9, { image: 0, map: "sum" })).toEqual({
      url: "/api/v1/attributions/9/display.nii.gz",
      ownStats: true,
    });
    expect(channelMapSource(9, { image: 1, map: 1 })).toEqual({
      url: "/api/v1/attributions/9/channels/1.nii.gz",
      ownStats: false,
    });
  });
});
