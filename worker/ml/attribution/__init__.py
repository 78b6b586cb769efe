"""Attribution methods: one module per method family.

``captum_eval`` computes evaluation maps with Captum (not differentiable w.r.t. the weights);
the differentiable attributions used inside the training loss live in their own module.
"""

from worker.ml.attribution.captum_eval import (
    AttributionResult,
    attribute_batch,
    attribute_subject,
    available_methods,
    load_on_grid,
    map_stats,
)

__all__ = [
    "AttributionResult",
    "attribute_batch",
    "attribute_subject",
    "available_methods",
    "load_on_grid",
    "map_stats",
]
