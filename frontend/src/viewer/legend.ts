// What red and blue mean for the run a map comes from (docs/method.md section 1): a classifier's
// pathological logit, or a regression run's predicted target.

export interface RelevanceLegend {
  /** Red, A > 0. */
  positive: string;
  /** Blue, A < 0. */
  negative: string;
  /** One sentence for the caption's title. */
  description: string;
}

const CLASSIFICATION: RelevanceLegend = {
  positive: "pathological (+)",
  negative: "healthy (−)",
  description: "Red pushes the decision towards pathological, blue towards healthy.",
};

// A segmentation map explains the summed foreground logits of a region (worker/ml/segmentation.py).
const SEGMENTATION: RelevanceLegend = {
  positive: "raises the region's lesion logits (+)",
  negative: "lowers them (−)",
  description: "Segmentation run: red raises the foreground logits of the explained region, blue lowers them.",
};

/** The legend of a run's maps, from its stored config and its dataset's target name. */
export function relevanceLegend(
  config: Record<string, unknown> | null | undefined,
  targetName?: string | null,
): RelevanceLegend {
  if (config?.task === "segmentation") return SEGMENTATION;
  if (config?.task !== "regression") return CLASSIFICATION;
  const target = targetName?.trim() ? targetName.trim() : "target";
  return {
    positive: `raises predicted ${target} (+)`,
    negative: `lowers predicted ${target} (−)`,
    description: `Regression run: red raises the predicted ${target}, blue lowers it.`,
  };
}
