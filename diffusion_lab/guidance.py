"""Guidance rules for conditional sampling (book chapters 7 and 8).

A guidance object tells the sampler how to use the target labels ``y``. The protocol is three small hooks,
so :func:`diffusion_lab.sampling.p_sample` and the DDIM step stay a few lines long:

``eps(model, x_t, t, y)``
    the ε the sampler uses (CFG mixes a conditional and an unconditional pass here);
``adjust_mean(mean, variance, x_t, t, y)``
    a shift of the ancestral (DDPM) mean μ_θ (classifier guidance adds scale·σ_t²·∇ log p_φ(y|x_t) here);
``adjust_eps(eps, schedule, x_t, t, y)``
    the same shift written on ε, for deterministic (DDIM) sampling, where there is no mean to move.

The samplers validate the labels once, before their loop (:meth:`Guidance.check_labels`), then call the hooks
with checked inputs: the hooks trust them and never read a value back from the device. Inside a sampling loop,
where every item is at the same step, the samplers call :meth:`Guidance.step_eps` with that step as a Python
int, so a rule that depends on the step (CFG in an interval) decides on the host without a device sync.

:class:`Guidance` is the identity for all three (the model gets ``y`` unchanged): subclass it for new rules.

Book equations:

  (7.1) classifier guidance, ancestral:  μ̃ = μ_θ(x_t, t) + s · σ_t² · ∇_{x_t} log p_φ(y | x_t)
  (7.2) classifier guidance, DDIM:       ε̃ = ε_θ(x_t, t) − s · √(1−ᾱ_t) · ∇_{x_t} log p_φ(y | x_t)
  (8.1) classifier-free guidance:        ε̃ = (1+w) · ε_θ(x_t, t, y) − w · ε_θ(x_t, t, ∅)
  (8.2) guidance in an interval:         ε̃ = (8.1) for t_lo ≤ t ≤ t_hi, ε_θ(x_t, t, y) otherwise
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from . import checks
from .diffusion import check_model_output
from .models import num_classes_of
from .schedules import NoiseSchedule

__all__ = ["Guidance", "ClassifierFreeGuidance", "ClassifierGuidance", "check_labels", "null_label", "num_classes_of"]


def check_labels(y, batch: int, num_classes: int | None = None, *, allow_null: bool = False) -> torch.Tensor:
    """Validate class labels and return them as a LongTensor of shape (B,) (see :func:`diffusion_lab.checks.labels`).

    ``y`` may be an int (the same label for the whole batch) or an integer tensor of shape (B,) or ().
    With ``num_classes`` given, labels must lie in [0, num_classes) — or [0, num_classes] when
    ``allow_null`` is true (``num_classes`` is the null label, "no class", of CFG).
    """
    return checks.labels(y, batch, num_classes, allow_null=allow_null)


def _resolve_num_classes(num_classes, model=None):
    if num_classes is None and model is not None:
        num_classes = num_classes_of(model)
    if num_classes is None:
        raise ValueError(
            "classifier-free guidance needs the number of classes to build the null label: pass "
            "ClassifierFreeGuidance(w, num_classes=K) or give the model a `num_classes` attribute "
            "(or `model.config.num_classes`)")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return int(num_classes)


def null_label(num_classes: int, batch: int, device=None) -> torch.Tensor:
    """The null label ∅ (value ``num_classes``) for a batch: what a CFG model sees when it is told no class."""
    return torch.full((batch,), int(num_classes), dtype=torch.long, device=device)


class Guidance:
    """No guidance: the model gets ``y`` as it is and the mean is left alone. Base class of the rules below.

    ``needs_labels`` says whether the rule needs target labels; the samplers raise a clear error when it does
    and ``y`` is missing.
    """

    needs_labels = False

    def check_labels(self, y, batch: int, model) -> torch.Tensor:
        """The boundary check of the target labels, run once by a sampler before its loop: here the labels go to
        the model, so they may be any of its classes or its null label."""
        return check_labels(y, batch, num_classes_of(model), allow_null=True)

    def eps(self, model, x_t: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        """ε used by the sampler at (x_t, t)."""
        eps = model(x_t, t) if y is None else model(x_t, t, y=y)
        return check_model_output(eps, x_t)

    def step_eps(self, model, x_t: torch.Tensor, t: torch.Tensor, y, t_index: int) -> torch.Tensor:
        """:meth:`eps` inside a sampling loop, where every item is at code step ``t_index`` (a Python int)."""
        return self.eps(model, x_t, t, y)

    def adjust_mean(self, mean, variance, x_t, t, y):
        """The ancestral mean after guidance (identity here)."""
        return mean

    def adjust_eps(self, eps, schedule: NoiseSchedule, x_t, t, y):
        """ε after guidance for DDIM sampling (identity here)."""
        return eps

    def __repr__(self):
        return f"{type(self).__name__}()"


class ClassifierFreeGuidance(Guidance):
    """Classifier-free guidance (Ho & Salimans 2022), book eq. (8.1), in the seed's convention:

        ε̃(x_t, t, y) = (1 + w) · ε_θ(x_t, t, y) − w · ε_θ(x_t, t, ∅)

    * ``w = 0`` is plain conditional sampling, ``w = −1`` is unconditional sampling, ``w > 0`` sharpens
      toward the class. diffusers' ``guidance_scale`` (and the CFG paper's Imagen-style "scale") is ``1 + w``:
      diffusers' ``guidance_scale=7.5`` is ``w = 6.5`` here.
    * ∅ is the null label, the value ``num_classes`` (the model must have been trained with label dropout
      to that value). ``num_classes`` is given here or read from ``model.num_classes`` or
      ``model.config.num_classes``.
    * The conditional and the null pass are one batched model call on ``cat([x_t, x_t])``; at ``w = 0``
      the null pass is skipped altogether (its weight is zero).
    * ``interval=(t_lo, t_hi)`` applies the guidance only at code timesteps t_lo ≤ t ≤ t_hi (0-based, both
      ends included) and samples with plain conditional ε (w = 0) elsewhere, book eq. (8.2) — the guidance
      interval of Kynkäänniemi et al. 2024 ("Applying Guidance in a Limited Interval Improves Sample and
      Distribution Quality in Diffusion Models"). Guidance at high noise is what collapses the diversity of
      each class; guidance at low noise is what makes each sample unmistakably its class. Outside the interval
      the null pass is skipped.
    """

    needs_labels = True

    def __init__(self, w: float, num_classes: int | None = None, *, interval: tuple[int, int] | None = None):
        self.w = checks.real_number(w, "w", hint=" (the guidance weight; diffusers' guidance_scale = 1 + w)")
        self.num_classes = None if num_classes is None else _resolve_num_classes(num_classes)
        self.interval = None if interval is None else checks.interval(interval)

    @classmethod
    def from_scale(cls, s: float, num_classes: int | None = None, *,
                   interval: tuple[int, int] | None = None) -> "ClassifierFreeGuidance":
        """The same rule from diffusers' ``guidance_scale`` s (ε̃ = ε(∅) + s·(ε(y) − ε(∅))): ``w = s − 1``, so
        ``from_scale(1)`` is plain conditional sampling and ``from_scale(7.5)`` is ``w = 6.5``."""
        s = checks.real_number(s, "s", hint=" (diffusers' guidance_scale = 1 + w)")
        return cls(s - 1.0, num_classes, interval=interval)

    def check_labels(self, y, batch: int, model) -> torch.Tensor:
        # the targets are classes; the null label is the rule's own business
        return check_labels(y, batch, _resolve_num_classes(self.num_classes, model))

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """The guidance weight used at each item's timestep: ``w`` inside ``interval`` (everywhere without one),
        0 outside it. Shape (B,), float64."""
        w = torch.full(t.shape, self.w, dtype=torch.float64, device=t.device)
        if self.interval is not None:
            lo, hi = self.interval
            w = torch.where((t >= lo) & (t <= hi), w, torch.zeros_like(w))
        return w

    def eps(self, model, x_t, t, y):
        if y is None:
            raise ValueError("classifier-free guidance needs target labels y (LongTensor of shape (B,))")
        B = x_t.shape[0]
        y = self.check_labels(y, B, model).to(x_t.device)
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(B) if t.dim() == 0 else t
        # Called with items at different steps: the items' timesteps decide (a host read, outside any loop).
        active = self.w != 0.0 and (self.interval is None or bool((self.weight(t) != 0).any()))
        return self._eps(model, x_t, t, y, active)

    def step_eps(self, model, x_t, t, y, t_index):
        # Inside a sampling loop the step is a Python int: the interval is decided on the host, no device sync.
        active = self.w != 0.0 and (self.interval is None or self.interval[0] <= t_index <= self.interval[1])
        return self._eps(model, x_t, t, y, active)

    def _eps(self, model, x_t, t, y, active: bool):
        if not active:      # w = 0, or outside the interval: plain conditional ε, no null pass
            return check_model_output(model(x_t, t, y=y), x_t)
        K = _resolve_num_classes(self.num_classes, model)
        B = x_t.shape[0]
        # 1. one batched call: the conditional pass and the null pass (label ∅ = K)
        x_in = torch.cat([x_t, x_t])
        t_in = torch.cat([t, t])
        y_in = torch.cat([y, null_label(K, B, device=y.device)])
        eps_both = model(x_in, t_in, y=y_in)
        if not isinstance(eps_both, torch.Tensor) or eps_both.shape != x_in.shape:
            raise ValueError(f"the model must return ε of its input's shape {tuple(x_in.shape)} "
                             f"(CFG batches the conditional and null passes), got "
                             f"{getattr(eps_both, 'shape', type(eps_both).__name__)}")
        eps_cond, eps_uncond = eps_both.chunk(2)
        # 2. eq. (8.1): ε̃ = (1 + w) ε(y) − w ε(∅); with an interval, eq. (8.2) with w per item
        if self.interval is None:
            return (1.0 + self.w) * eps_cond - self.w * eps_uncond
        w = self.weight(t).to(eps_cond.dtype).reshape(B, *([1] * (eps_cond.dim() - 1)))
        return eps_cond + w * (eps_cond - eps_uncond)

    def __repr__(self):
        extra = "" if self.interval is None else f", interval={self.interval}"
        return f"ClassifierFreeGuidance(w={self.w:g}, num_classes={self.num_classes}{extra})"


class ClassifierGuidance(Guidance):
    """Classifier guidance (Dhariwal & Nichol 2021, the seed's "Classifier-Guidance"), book eqs. (7.1)–(7.2).

    The diffusion model is unconditional: it gets no label. The target ``y`` goes to a noise-aware
    classifier ``classifier(x_t, t) -> logits (B, num_classes)``, and the ancestral mean is shifted by

        μ̃ = μ_θ(x_t, t) + scale · σ_t² · ∇_{x_t} log p_φ(y | x_t)          (7.1)

    where σ_t² is the variance of the reverse step in use (β_t or β̃_t). The gradient is taken with respect
    to the very tensor ``x_t`` fed to the classifier (a detached copy that requires grad), inside its own
    ``torch.enable_grad()`` block; no graph outlives the call and no gradient reaches the classifier's
    parameters. For DDIM, the same score is written on ε (Dhariwal & Nichol, Algorithm 2):

        ε̃ = ε_θ(x_t, t) − scale · √(1 − ᾱ_t) · ∇_{x_t} log p_φ(y | x_t)      (7.2)

    ``scale = 0`` is unguided sampling; the seed calls the scale γ.
    """

    needs_labels = True

    def __init__(self, classifier, scale: float = 1.0):
        if not callable(classifier):
            raise TypeError(f"classifier must be a callable classifier(x_t, t) -> logits, got {type(classifier).__name__}")
        self.scale = checks.real_number(scale, "scale", hint=" (the classifier-guidance scale γ)")
        self.classifier = classifier

    def check_labels(self, y, batch: int, model) -> torch.Tensor:
        # the labels go to the classifier; its number of classes, when it tells, bounds them
        return check_labels(y, batch, num_classes_of(self.classifier))

    def grad_log_prob(self, x_t: torch.Tensor, t: torch.Tensor, y) -> torch.Tensor:
        """∇_{x_t} log p_φ(y | x_t), one gradient per item (the items are independent, so the gradient of the
        sum of log-probabilities is each item's own gradient). Returned detached, in x_t's shape.

        This is the one place the guidance gradient is computed: the sampling hooks (7.1)/(7.2) call it too, so a
        subclass that overrides it changes the guidance (chapter 7 does, to run the seed's "cross-entropy"
        literally). Called from a sampler (inside :func:`diffusion_lab.checks.trusted`) it skips the label
        checks, which were made once before the loop."""
        if y is None:
            raise ValueError("classifier guidance needs target labels y (LongTensor of shape (B,))")
        check = checks.value_checks_enabled()
        if check:
            y = check_labels(y, x_t.shape[0]).to(x_t.device)
        return self._grad_log_prob(x_t, t, y, check_range=check)

    def _grad_log_prob(self, x_t, t, y, check_range: bool = False):
        B = x_t.shape[0]
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            # 1. the classifier's logits at the very tensor we differentiate
            logits = self.classifier(x_in, t)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != B:
                raise ValueError(f"the classifier must return logits of shape (B, num_classes) = ({B}, K), got "
                                 f"{getattr(logits, 'shape', type(logits).__name__)}")
            if check_range:
                check_labels(y, B, logits.shape[1])
            if logits.dtype in (torch.float16, torch.bfloat16):  # softmax in fp32 for half-precision classifiers
                logits = logits.float()
            # 2. log p_φ(y | x_t) of the target labels, summed over the items, and its gradient wrt x_t
            log_p = F.log_softmax(logits, dim=-1)
            selected = log_p.gather(1, y[:, None]).sum()
            (grad,) = torch.autograd.grad(selected, x_in)
        return grad.detach().to(x_t.dtype)

    def eps(self, model, x_t, t, y):
        # The model is unconditional here: y goes to the classifier, not to the model.
        return check_model_output(model(x_t, t), x_t)

    def adjust_mean(self, mean, variance, x_t, t, y):
        if self.scale == 0.0:
            return mean
        # eq. (7.1): μ̃ = μ + s · σ_t² · ∇ log p_φ(y | x_t)
        return mean + self.scale * variance * self.grad_log_prob(x_t, t, y)

    def adjust_eps(self, eps, schedule, x_t, t, y):
        if self.scale == 0.0:
            return eps
        # eq. (7.2): ε̃ = ε − s · √(1 − ᾱ_t) · ∇ log p_φ(y | x_t)
        sqrt_one_minus_ab = schedule.extract("sqrt_one_minus_alpha_bars", t, x_t)
        return eps - self.scale * sqrt_one_minus_ab * self.grad_log_prob(x_t, t, y)

    def __repr__(self):
        return f"ClassifierGuidance(classifier={type(self.classifier).__name__}, scale={self.scale:g})"
