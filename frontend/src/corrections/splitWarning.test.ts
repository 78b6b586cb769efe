import { describe, expect, it } from "vitest";
import { splitWarning } from "./FromReviewsPanel";

describe("splitWarning", () => {
  it("warns when no corrected subject is in the train split", () => {
    expect(splitWarning(["test", "test"])).toMatch(/^All 2 corrected subjects are in the test split/);
    expect(splitWarning(["val", "test"])).toMatch(/val and test splits/);
    expect(splitWarning(["test"])).toMatch(/^The corrected subject is in the test split/);
  });
  it("counts the subjects outside train, and says nothing when all are in train", () => {
    expect(splitWarning(["train", "test"])).toBe("1 of 2 corrected subjects are outside the train split and will not be trained on.");
    expect(splitWarning(["train"])).toBeNull();
    expect(splitWarning([])).toBeNull();
  });
});
