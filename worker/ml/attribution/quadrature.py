"""Quadrature rules on [0, 1] for the Integrated Gradients path integral.

Rules return float64 numpy arrays: positions ``alphas`` along the path ``x' + alpha (x - x')``
and weights that sum to 1. They are computed in float64 and cast to the images' dtype only
where they multiply a tensor.

- ``gauss_legendre(m)``: Captum's ``gausslegendre`` rule exactly as Captum 0.9 builds it:
  numpy's ``leggauss(m)`` nodes and weights, mapped from [-1, 1] by ``0.5 * (1 + node)`` and
  ``0.5 * weight`` (tests pin it to Captum's to 1e-7; they are bit-identical).
- ``riemann_middle(m)``: ``(k + 0.5) / m`` with weights ``1 / m``.
- ``trapezoid(alphas)``: composite trapezoid weights of any increasing points from 0 to 1,
  the rule of adaptive IG (``worker.ml.attribution.adaptive``), which bisects intervals and
  so keeps every point it has evaluated. Gauss-Legendre nodes do not nest (the nodes of 2m
  points share none with those of m, but the midpoint when both are odd), which is why the
  adaptive scheme does not use them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gauss_legendre", "riemann_middle", "trapezoid"]


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1], as Captum's ``gausslegendre`` builds them."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1], weights sum to 2
    return 0.5 * (1.0 + nodes), 0.5 * weights


def riemann_middle(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints ``(k + 0.5) / m`` with weights ``1 / m``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)


def trapezoid(alphas: np.ndarray) -> np.ndarray:
    """Composite trapezoid weights of increasing points ``alphas`` from 0 to 1:
    ``w_k = (alpha_{k+1} - alpha_{k-1}) / 2`` (one-sided at the ends); they sum to 1."""
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 1 or len(a) < 2 or a[0] != 0.0 or a[-1] != 1.0 or np.any(np.diff(a) <= 0):
        raise ValueError("trapezoid points must increase from 0 to 1")
    h = np.diff(a)  # (K - 1,)
    weights = np.zeros_like(a)
    weights[:-1] += 0.5 * h
    weights[1:] += 0.5 * h
    return weights
