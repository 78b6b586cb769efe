"""Attributions for training: differentiable with respect to the model's weights.

The attribution constraint (docs/method.md section 3) puts a loss on an attribution map, so the map
must carry a graph back to the weights ("double back-propagation"). Captum's implementations
detach their gradients; the methods here call ``torch.autograd.grad(..., create_graph=True)``
instead. With ``create_graph=False`` they serve evaluation and agree with Captum (tested for
Integrated Gradients).

Sign convention (docs/method.md section 1): A > 0 pushes the pathological logit up. No method here
takes absolute values.

Conventions shared by every method:

- ``model(x)`` returns the pathological logit ``(B,)`` or a logit map, which is reduced with
  ``worker.ml.nets.pathological_logit``.
- The model stays in the mode the caller chose. In train mode, batch statistics (batch norm)
  are computed over whatever is forwarded together (the batch, or a chunk of interpolation
  points), so samples are not independent and chunking changes the result; dropout makes the
  map stochastic. Eval mode or instance norm avoid both.
- Only the forward pass of ``x`` itself may update batch-norm running statistics. Auxiliary
  forward passes (interpolation points, baselines, references) run with momentum 0, so training
  with IG or EG does not drag the running statistics toward scaled or zero images.
- The caller's ``x`` is never modified and its ``requires_grad`` flag is left as it was: the
  maps are built from a detached copy, so they are not differentiable with respect to ``x``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from attrivue_core.configs import RunConfig
from worker.ml.nets import pathological_logit

__all__ = [
    "ATTRIBUTION_METHODS",
    "AttributionOutput",
    "Endpoints",
    "QuadratureMethod",
    "TrainQuadratureMethod",
    "attribute",
    "expected_gradients",
    "gradient",
    "integrated_gradients",
    "training_attribution_params",
]

QuadratureMethod = Literal["riemann_middle", "gausslegendre"]
# Training may also draw its points: ``riemann_stratified`` takes one uniform alpha in each of
# the m equal intervals of [0, 1], afresh for every image and step (weights 1/m). It is an
# unbiased estimate of the integral, so the map the constraint sees equals the exact IG map in
# expectation, where fixed points (``riemann_middle``) let a network meet L_A at those m alphas
# only.
TrainQuadratureMethod = Literal["riemann_middle", "gausslegendre", "riemann_stratified"]
# Which endpoint logits Integrated Gradients evaluates besides its path points: both F(x) and
# F(x') (the logits and the completeness delta), F(x) only (the logits a training step reuses
# for L_C), or none (a training step whose L_C has a forward of its own).
Endpoints = Literal["both", "input", "none"]


@dataclass
class AttributionOutput:
    """A signed attribution map with its diagnostics.

    Attributes:
        attributions: Same shape as the input; A > 0 is pathological relevance. Carries a graph
            to the weights when computed with ``create_graph=True``.
        delta: ``(B,)`` completeness gap ``sum(A) - (F(x) - F(x'))``, detached; ``None`` for
            methods without a completeness axiom (gradient, EG) and for sums of methods.
        logits: ``(B,)`` pathological logits F(x) when the method evaluates them anyway
            (gradient, IG), else ``None``. With ``create_graph=True`` they carry their graph,
            so the classification loss can reuse them instead of a second forward pass; with
            ``create_graph=False`` they are detached.
    """

    attributions: torch.Tensor
    delta: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pathological logit ``(B,)`` of a batch, reducing a logit map if needed."""
    return pathological_logit(model(x))


@contextmanager
def _running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Keep batch-norm running statistics unchanged during auxiliary forward passes.

    Momentum 0 makes the update ``running = 1 * running + 0 * batch`` (exact); the batch
    counter, which only matters for cumulative averaging (momentum ``None``), is restored. The
    running buffers are not replaced or rewritten afterwards, so graphs that saved them stay
    valid.
    """
    saved: list[tuple[_BatchNorm, float | None, torch.Tensor | None, torch.Tensor | None]] = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            counter = module.num_batches_tracked
            copy = None if counter is None else counter.clone()
            saved.append((module, module.momentum, counter, copy))
            module.momentum = 0.0
    try:
        yield
    finally:
        for module, momentum, counter, copy in saved:
            module.momentum = momentum
            if counter is not None and copy is not None:
                counter.copy_(copy)


def _endpoint_logits(model: nn.Module, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """F(x) ``(B,)``: with its graph when it may be reused for the classification loss."""
    if create_graph:
        with torch.enable_grad():
            return _logits(model, x)
    with torch.no_grad():
        return _logits(model, x)


def _integrate_paths(
    model: nn.Module,
    x: torch.Tensor,
    references: Callable[[torch.Tensor], torch.Tensor],
    alphas: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    internal_batch_size: int | None,
    create_graph: bool,
) -> torch.Tensor:
    """Sum over path points p of ``w_p * (x_b - r_p) * dF/dx(r_p + a_p (x_b - r_p))``.

    Points are numbered ``p = j * B + b`` (j-th point of sample b) and evaluated in chunks of
    ``internal_batch_size`` images; each chunk's interpolated images are built on the fly, so
    no more than one chunk of them exists at a time. With ``create_graph=True`` every chunk's
    graph is kept until the loss is back-propagated (inherent to double back-propagation), so
    chunking bounds peak memory of the forward pass, not the memory held by the graph.

    Args:
        model: The classifier.
        x: ``(B, C, D, H, W)``, detached.
        references: Maps point indices ``(n,)`` to their references ``(n, C, D, H, W)``.
        alphas: ``(P,)`` positions along the path, P = points per sample * B.
        weights: ``(P,)`` quadrature weights; ``None`` for unit weights (no product).
        internal_batch_size: Images per forward/backward pass; ``None`` for all P at once.
        create_graph: Keep the graph of the gradients (training).

    Returns:
        ``(B, C, D, H, W)`` attributions.
    """
    batch = x.shape[0]
    points = alphas.shape[0]
    chunk = points if internal_batch_size is None else internal_batch_size
    if chunk < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    spatial = (-1,) + (1,) * (x.ndim - 1)
    # One point per sample in one pass (EG with k = 1): point b is sample b, so the gathers
    # and the scatter-add are identities and are skipped.
    one_pass = points == batch and chunk >= points
    total = torch.zeros_like(x)  # (B, C, D, H, W)
    with torch.enable_grad(), _running_stats_frozen(model):
        for start in range(0, points, chunk):
            index = torch.arange(start, min(start + chunk, points), device=x.device)  # (n,)
            sample = index % batch  # (n,) sample b of each point
            reference = references(index)  # (n, C, D, H, W)
            direction = (x if one_pass else x[sample]) - reference  # (n, C, D, H, W)
            image = reference + alphas[index].view(spatial) * direction  # (n, C, D, H, W)
            image.requires_grad_(True)
            logits = _logits(model, image)  # (n,)
            # Unit output gradients, weights applied afterwards (as Captum does): a weight
            # pushed through the backward pass meets TF32 rounding in cuDNN's convolutions
            # on a GPU, and w * round(g) is not round(w * g) unless w is a power of two.
            (grads,) = torch.autograd.grad(
                logits,
                image,
                grad_outputs=torch.ones_like(logits),
                create_graph=create_graph,
            )  # (n, C, D, H, W) dF/dx at each point
            if weights is None:
                weighted = grads
            else:
                weighted = weights[index].to(grads.dtype).view(spatial) * grads  # w_p * dF/dx
            if one_pass:
                return direction * weighted
            total = total.index_add(0, sample, direction * weighted)
    return total


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if x.ndim < 2:
        raise ValueError(f"expected a batch (B, C, ...), got shape {tuple(x.shape)}")
    return x.detach()


def gradient(
    model: nn.Module,
    x: torch.Tensor,
    *,
    times_input: bool = False,
    create_graph: bool = True,
) -> AttributionOutput:
    """Gradient of the pathological logit with respect to the input (saliency, signed).

    Simonyan et al., "Deep inside convolutional networks" (ICLR workshop 2014); with
    ``times_input``, gradient * input (Shrikumar et al., 2016). The cheapest attribution; the
    TMI 2023 authors report that training with it is close to training with EG.

    The logits are the gradient's own forward pass, so ``output.logits`` is a plain forward
    of ``x`` that the classification loss can reuse.

    Args:
        model: Classifier returning a logit ``(B,)`` or a logit map.
        x: ``(B, C, D, H, W)`` images.
        times_input: Multiply the gradient by the input.
        create_graph: Keep the graph to the weights (training); ``False`` for evaluation.

    Returns:
        ``AttributionOutput`` with attributions ``(B, C, D, H, W)``, ``delta=None`` and the
        logits ``(B,)``.

    Example:
        >>> out = gradient(model, images)
        >>> loss = classification(out.logits, labels) + lam * attribution_loss(
        ...     out.attributions, targets)
    """
    x = _check_input(x)
    inputs = x.clone().requires_grad_(True)  # (B, C, D, H, W), a leaf of our own
    with torch.enable_grad():
        logits = _logits(model, inputs)  # (B,)
        (grads,) = torch.autograd.grad(logits.sum(), inputs, create_graph=create_graph)
    attributions = grads * x if times_input else grads  # (B, C, D, H, W)
    return AttributionOutput(
        attributions=attributions,
        delta=None,
        logits=logits if create_graph else logits.detach(),
    )


def _quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Alphas in [0, 1] and weights (summing to 1), as Captum builds them."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method == "riemann_middle":
        alphas = (np.arange(steps) + 0.5) / steps
        return alphas, np.full(steps, 1.0 / steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1], sum 2
        return 0.5 * (nodes + 1.0), 0.5 * weights
    raise ValueError(f"unknown method {method!r}; use 'riemann_middle' or 'gausslegendre'")


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    *,
    baseline: torch.Tensor | float | None = None,
    steps: int = 8,
    method: TrainQuadratureMethod = "riemann_middle",
    internal_batch_size: int | None = None,
    create_graph: bool = True,
    endpoints: Endpoints = "both",
    generator: torch.Generator | None = None,
) -> AttributionOutput:
    """Integrated Gradients, differentiable with respect to the weights.

    Sundararajan, Taly and Yan, "Axiomatic attribution for deep networks" (ICML 2017):
    ``A_i = (x_i - x'_i) * sum_k w_k dF(x' + a_k (x - x'))/dx_i``. The alphas and weights
    follow Captum's (``riemann_middle``: ``(k + 0.5) / m`` with weights ``1 / m``;
    ``gausslegendre``: Legendre nodes and weights mapped to [0, 1]), so the result agrees with
    ``captum.attr.IntegratedGradients(method=..., n_steps=m)`` on the same model.

    Cost: ``steps * B`` forward/backward passes on path points, plus F(x) and F(x') for the
    completeness delta. With ``create_graph=True`` the graph of every path point is kept until
    the loss is back-propagated, so memory grows with ``steps`` whatever the chunk size;
    ``internal_batch_size`` only bounds the images forwarded at once.

    Args:
        model: Classifier returning a logit ``(B,)`` or a logit map.
        x: ``(B, C, D, H, W)`` images.
        baseline: Reference x'; ``None`` is the zero image, else a tensor (or number)
            broadcastable to ``x``.
        steps: Number of integration points m.
        method: ``"riemann_middle"``, ``"gausslegendre"`` or ``"riemann_stratified"`` (one
            uniform point in each of the m intervals, drawn per image and call: a random map
            whose expectation is the exact IG map; Captum has no counterpart).
        internal_batch_size: Path images per forward/backward pass; ``None`` for all
            ``steps * B`` at once.
        create_graph: Keep the graph to the weights (training); ``False`` for evaluation.
        generator: Random source of ``riemann_stratified`` (the global one when ``None``).
        endpoints: ``"both"``: evaluate F(x) and F(x'); ``"input"``: F(x) only (no delta);
            ``"none"``: neither (no logits, no delta). A training step passes what it uses:
            each endpoint is a forward pass of the batch, and the maps do not depend on them.

    Returns:
        ``AttributionOutput``: attributions ``(B, C, D, H, W)``; delta ``(B,)``, detached
        (``None`` unless ``endpoints="both"``); logits F(x) ``(B,)``, a plain forward of ``x``
        that the classification loss can reuse when ``create_graph=True`` (``None`` with
        ``endpoints="none"``).

    Example:
        >>> out = integrated_gradients(model, images, steps=16, method="gausslegendre")
        >>> out.delta.abs().max()  # completeness check
    """
    x = _check_input(x)
    if baseline is None:
        reference = torch.zeros_like(x)
    else:
        reference = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).detach()
        reference = reference.expand_as(x)  # (B, C, D, H, W)
    batch = x.shape[0]
    # Point p = k * B + b is step k of sample b.
    if method == "riemann_stratified":
        if steps < 1:  # _quadrature checks the fixed rules
            raise ValueError(f"steps must be >= 1, got {steps}")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        uniform = torch.rand(
            (steps, batch), generator=generator, device=draw_device, dtype=torch.float64
        )
        offsets = torch.arange(steps, dtype=torch.float64, device=draw_device).view(-1, 1)
        alphas = ((offsets + uniform) / steps).flatten().to(device=x.device, dtype=x.dtype)
        weights = torch.full((steps * batch,), 1.0 / steps, dtype=x.dtype, device=x.device)
    else:
        alphas_np, weights_np = _quadrature(steps, method)  # (m,), (m,)
        # The same alphas and weights for every sample.
        alphas = torch.as_tensor(alphas_np, dtype=x.dtype, device=x.device)
        alphas = alphas.repeat_interleave(batch)  # (m * B,)
        weights = torch.as_tensor(weights_np, dtype=x.dtype, device=x.device)
        weights = weights.repeat_interleave(batch)  # (m * B,)

    if endpoints not in ("both", "input", "none"):
        raise ValueError(f"endpoints must be 'both', 'input' or 'none', got {endpoints!r}")
    logits = None if endpoints == "none" else _endpoint_logits(model, x, create_graph)  # F(x)
    attributions = _integrate_paths(
        model,
        x,
        lambda index: reference[index % batch],
        alphas,
        weights,
        internal_batch_size=internal_batch_size,
        create_graph=create_graph,
    )  # (B, C, D, H, W)
    delta = None
    if logits is not None and endpoints == "both":
        with torch.no_grad(), _running_stats_frozen(model):
            baseline_logits = _logits(model, reference.contiguous())  # (B,) F(x')
        delta = attributions.detach().flatten(1).sum(1) - (logits.detach() - baseline_logits)
    if logits is not None and not create_graph:
        logits = logits.detach()
    return AttributionOutput(attributions=attributions, delta=delta, logits=logits)


def expected_gradients(
    model: nn.Module,
    x: torch.Tensor,
    *,
    references: torch.Tensor | None = None,
    k: int = 1,
    zero_reference_prob: float = 0.0,
    generator: torch.Generator | None = None,
    internal_batch_size: int | None = None,
    create_graph: bool = True,
) -> AttributionOutput:
    """Expected Gradients: IG's integrand averaged over data references and a ~ U(0, 1).

    Erion et al., "Improving performance of deep learning models with axiomatic attribution
    priors and expected gradients" (Nature Machine Intelligence 2021):
    ``A = 1/k sum_j (x - x'_j) * dF(x'_j + a_j (x - x'_j))/dx``. The authors train with
    ``k = 1`` and explain with 100 to 200 samples.

    References: by default each image's reference is another image of the same batch (drawn
    uniformly among the other subjects, independently for each of the k samples); with a
    batch of one, where there is no other subject, the zero image is used. With
    ``references`` given, they are drawn uniformly from that set. Independently, each draw is
    replaced by the zero image with probability ``zero_reference_prob``. All draws use
    ``generator``, so a fixed seed reproduces the map (on CPU, or in eval mode on any device).

    The completeness gap holds only in expectation over references and alphas; a k-sample
    estimate would be Monte Carlo noise rather than a convergence diagnostic, so ``delta`` is
    ``None``. F(x) is not evaluated: ``logits`` is ``None``.

    Args:
        model: Classifier returning a logit ``(B,)`` or a logit map.
        x: ``(B, C, D, H, W)`` images.
        references: Optional reference set ``(R, C, D, H, W)``; ``None`` uses the batch.
        k: Samples (reference, alpha) per image.
        zero_reference_prob: Probability that a sample's reference is the zero image.
        generator: Source of the random draws (device of its own; draws are moved to x's).
        internal_batch_size: Path images per forward/backward pass; ``None`` for all
            ``k * B`` at once.
        create_graph: Keep the graph to the weights (training); ``False`` for evaluation.

    Returns:
        ``AttributionOutput`` with attributions ``(B, C, D, H, W)``, ``delta=None`` and
        ``logits=None``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = expected_gradients(model, images, k=1, generator=g)
    """
    x = _check_input(x)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0.0 <= zero_reference_prob <= 1.0:
        raise ValueError(f"zero_reference_prob must lie in [0, 1], got {zero_reference_prob}")
    batch = x.shape[0]
    draw_device = generator.device if generator is not None else torch.device("cpu")

    if references is None:
        bank = x  # (B, C, D, H, W)
        if batch > 1:
            # A shift in 1..B-1 picks another subject uniformly: (b + shift) % B != b.
            shift = torch.randint(1, batch, (k, batch), generator=generator, device=draw_device)
            own = torch.arange(batch, device=draw_device)
            drawn = (own + shift) % batch  # (k, B)
        else:
            drawn = torch.zeros((k, batch), dtype=torch.long, device=draw_device)
            zero_reference_prob = 1.0
    else:
        bank = references.detach().to(dtype=x.dtype, device=x.device)  # (R, C, D, H, W)
        if bank.ndim != x.ndim or bank.shape[1:] != x.shape[1:] or bank.shape[0] < 1:
            raise ValueError(
                f"references must be (R, {', '.join(map(str, x.shape[1:]))}), "
                f"got {tuple(bank.shape)}"
            )
        drawn = torch.randint(0, bank.shape[0], (k, batch), generator=generator, device=draw_device)
    zero = torch.rand((k, batch), generator=generator, device=draw_device) < zero_reference_prob
    alphas = torch.rand((k, batch), generator=generator, device=draw_device, dtype=torch.float64)

    # Point p = j * B + b is sample j of image b.
    drawn = drawn.flatten().to(x.device)  # (k * B,)
    keep = (~zero).flatten().to(device=x.device, dtype=x.dtype)  # (k * B,) 0 for zero refs
    spatial = (-1,) + (1,) * (x.ndim - 1)

    def reference_of(index: torch.Tensor) -> torch.Tensor:
        reference = bank[drawn[index]]  # (n, C, D, H, W)
        if zero_reference_prob == 0.0:
            return reference  # no zero reference drawn: keep is all ones
        return reference * keep[index].view(spatial)

    attributions = _integrate_paths(
        model,
        x,
        reference_of,
        alphas.flatten().to(device=x.device, dtype=x.dtype),
        None if k == 1 else torch.full((k * batch,), 1.0 / k, dtype=x.dtype, device=x.device),
        internal_batch_size=internal_batch_size,
        create_graph=create_graph,
    )  # (B, C, D, H, W)
    return AttributionOutput(attributions=attributions, delta=None, logits=None)


AttributionFunction = Callable[..., AttributionOutput]

# Name -> function, as named in configs and in ``attribute``.
ATTRIBUTION_METHODS: dict[str, AttributionFunction] = {
    "gradient": gradient,
    "gradient_x_input": functools.partial(gradient, times_input=True),
    "integrated_gradients": integrated_gradients,
    "expected_gradients": expected_gradients,
}


def _accepted_params(function: AttributionFunction) -> set[str]:
    parameters = inspect.signature(function).parameters
    return {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    methods: Sequence[str] | str,
    **params,
) -> AttributionOutput:
    """Compute one attribution method, or the sum of several, by name.

    Summing methods in training makes the model robust to the method used at inference
    (Wargnier-Dauchelle et al., TMI 2023). Each method receives the parameters of ``params``
    that its signature accepts (``create_graph`` goes to all; ``steps`` only to IG, ...).

    Args:
        model: Classifier returning a logit ``(B,)`` or a logit map.
        x: ``(B, C, D, H, W)`` images.
        methods: A name of ``ATTRIBUTION_METHODS`` or a sequence of them.
        **params: Keyword parameters of the named methods.

    Returns:
        ``AttributionOutput``: the (summed) attributions; the delta of a single method (a sum
        of methods has none); the logits of the first method that evaluated F(x), else
        ``None``.

    Raises:
        ValueError: If no method or an unknown method is named.
        TypeError: If a parameter is accepted by none of the named methods.

    Example:
        >>> out = attribute(model, images, ["gradient", "integrated_gradients"], steps=4)
    """
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ValueError("name at least one attribution method")
    unknown = [name for name in names if name not in ATTRIBUTION_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(ATTRIBUTION_METHODS)}")
    functions = [ATTRIBUTION_METHODS[name] for name in names]
    accepted = [_accepted_params(function) for function in functions]
    unused = set(params) - set().union(*accepted)
    if unused:
        raise TypeError(f"parameters {sorted(unused)} are accepted by none of {names}")

    outputs = [
        function(model, x, **{key: value for key, value in params.items() if key in keys})
        for function, keys in zip(functions, accepted, strict=True)
    ]
    attributions = outputs[0].attributions
    for output in outputs[1:]:
        attributions = attributions + output.attributions
    logits = next((output.logits for output in outputs if output.logits is not None), None)
    delta = outputs[0].delta if len(outputs) == 1 else None
    return AttributionOutput(attributions=attributions, delta=delta, logits=logits)


def training_attribution_params(
    config: RunConfig,
    generator: torch.Generator | None,
    *,
    baseline: torch.Tensor | None = None,
    references: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Keyword parameters of ``attribute`` for a run's training attributions
    (``config.train_attribution``), differentiable (``create_graph=True``).

    ``baseline`` (IG) and ``references`` (EG) are those of ``attribution_baseline="healthy"``;
    ``None`` keeps each method's default (the zero image; the other images of the batch).
    ``generator`` is the random source of Expected Gradients and of IG's
    ``riemann_stratified`` points.
    """
    params: dict[str, Any] = {"create_graph": True}
    if "integrated_gradients" in config.train_attribution:
        params.update(steps=config.ig_steps, method=config.ig_method)
        if config.ig_method == "riemann_stratified":
            params["generator"] = generator
        if baseline is not None:
            params["baseline"] = baseline
    if "expected_gradients" in config.train_attribution:
        params.update(
            k=config.eg_k,
            zero_reference_prob=config.eg_zero_reference_prob,
            generator=generator,
        )
        if references is not None:
            params["references"] = references
    return params
