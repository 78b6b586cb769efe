import { describe, expect, it } from "vitest";
import { formatLocation } from "./location";

describe("formatLocation", () => {
  it("shows the position and the MR and relevance values, not the lesion ring", () => {
    const location = {
      mm: [12.34, -5, 7.25, 1],
      values: [
        { name: "image.nii.gz", value: 190 },
        { name: "relevance.nii.gz", value: -0.01234 },
        { name: "lesion.nii.gz", value: 2 },
      ],
      string: "23×13×8×0 = 190 -0.0123 2",
    };
    expect(formatLocation(location)).toBe("12.3, -5.0, 7.3 mm · MR 190 · relevance -0.0123");
  });

  it("is empty for anything else", () => {
    expect(formatLocation(null)).toBe("");
    expect(formatLocation("x")).toBe("");
  });
});
