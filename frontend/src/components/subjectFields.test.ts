import { describe, expect, it } from "vitest";
import { SITE_MAX_LENGTH, validateSite } from "./subjectFields";

describe("validateSite", () => {
  it("trims and accepts names up to the limit, and the empty site", () => {
    expect(validateSite("  Basel 3T ")).toEqual({ ok: true, value: "Basel 3T" });
    expect(validateSite("")).toEqual({ ok: true, value: "" });
    expect(validateSite("x".repeat(SITE_MAX_LENGTH))).toMatchObject({ ok: true });
  });

  it("refuses long names and control characters with a message", () => {
    const long = validateSite("x".repeat(SITE_MAX_LENGTH + 1));
    expect(long).toMatchObject({ ok: false });
    expect(!long.ok && long.error).toContain("64");
    expect(validateSite("Bern\nZurich")).toMatchObject({ ok: false });
    expect(validateSite("a\tb")).toMatchObject({ ok: false });
  });
});
