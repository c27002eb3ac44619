"""What the network predicts: ε, x₀ or v (book chapter 5, section 5.6).

With a_t = √ᾱ_t and s_t = √(1−ᾱ_t) (so a_t² + s_t² = 1), the forward sample (2.4) is x_t = a_t x₀ + s_t ε. A network
may predict any one of three targets; given x_t, each determines the other two (book eqs. 5.5–5.7):

  (5.5)  v   = a_t ε − s_t x₀                         the "velocity" of Salimans & Ho (2022), §4
  (5.6)  x₀  = (x_t − s_t ε) / a_t  = a_t x_t − s_t v   (2.4) solved for x₀; the v form needs a² + s² = 1
         ε   = (x_t − a_t x₀) / s_t = s_t x_t + a_t v
         v   = (ε − s_t x_t) / a_t  = (a_t x_t − x₀) / s_t
  (5.7)  ‖ε − ε̂‖² = SNR_t ‖x₀ − x̂₀‖² = ᾱ_t ‖v − v̂‖²,   SNR_t = ᾱ_t / (1 − ᾱ_t)      (x_t held fixed)

(5.7) says that training on x₀- or v-MSE is training on ε-MSE with a weight over t: :func:`eps_mse_weight`;
:func:`min_snr_weights` is the min-SNR-γ weighting written for each target. :class:`EpsFromPrediction` wraps an
x₀- or v-network into the ``model(x_t, t, y=None) -> ε`` callable that every sampler and
:func:`diffusion_lab.likelihood.vlb_terms` expect; :func:`as_eps_model` is the one place that wraps (the trainer,
checkpoints and loaders call it), and :func:`check_prediction` the one check of the name.

This module owns the prediction type: its names (:data:`PARAMETERIZATIONS`), their validation, the training
target, the loss weights and the ε-wrap.

Coefficients are gathered from the schedule's float64 tensors (cast to the data's dtype at the end, as
:meth:`NoiseSchedule.extract` does). Code index t is the paper's step t+1.
"""
from __future__ import annotations

import torch

from . import checks
from .diffusion import predict_eps_from_x0, predict_x0_from_eps
from .schedules import NoiseSchedule, check_schedule, check_timesteps

__all__ = ["PARAMETERIZATIONS", "check_prediction", "as_eps_model", "min_snr_weights", "velocity", "training_target", "to_eps", "to_x0", "to_v", "convert",
           "eps_mse_weight", "EpsFromPrediction"]

PARAMETERIZATIONS = ("eps", "x0", "v")
"""What a network may predict (``prediction=`` of training, checkpoints and the CLI's ``--prediction``)."""


def check_prediction(prediction, name: str = "prediction") -> str:
    """``prediction`` if it is one of :data:`PARAMETERIZATIONS`, else an
    :class:`~diffusion_lab.errors.UnknownNameError` (a ValueError): the package's one check of the name."""
    return checks.choice(prediction, PARAMETERIZATIONS,
                         f"{name} must be one of {PARAMETERIZATIONS} (what the network outputs), got {prediction!r}")


def _check(schedule, parameterization=None):
    """The boundary checks of this module, with the package's one schedule check and one name check."""
    check_schedule(schedule)
    if parameterization is not None:
        check_prediction(parameterization, "parameterization")


def _a_s(schedule, t, x):
    """(√ᾱ_t, √(1−ᾱ_t)) gathered at code index t, shaped to broadcast over x. ``t`` is validated here, at this
    module's public boundary (``NoiseSchedule.extract`` trusts its input)."""
    t = check_timesteps(t, schedule.T, batch=x.shape[0])
    return schedule.extract("sqrt_alpha_bars", t, x), schedule.extract("sqrt_one_minus_alpha_bars", t, x)


def velocity(schedule: NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """The v-target of eq. (5.5): v = √ᾱ_t ε − √(1−ᾱ_t) x₀ (Salimans & Ho 2022)."""
    _check(schedule)
    checks.same_shape(x0, noise, "x0", "noise")
    a, s = _a_s(schedule, t, x0)
    return a * noise - s * x0


def training_target(schedule: NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor, parameterization: str):
    """What a network of the given parameterization is trained to output for x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε:
    ε itself, x₀, or v of eq. (5.5)."""
    _check(schedule, parameterization)
    checks.same_shape(x0, noise, "x0", "noise")
    if parameterization == "eps":
        return noise
    if parameterization == "x0":
        return x0
    return velocity(schedule, x0, t, noise)


def to_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t, pred: torch.Tensor, parameterization: str) -> torch.Tensor:
    """ε from a prediction, eq. (5.6): ε = (x_t − √ᾱ_t x₀)/√(1−ᾱ_t) for x₀, ε = √(1−ᾱ_t) x_t + √ᾱ_t v for v."""
    _check(schedule, parameterization)
    checks.same_shape(pred, x_t, "pred", "x_t")
    if parameterization == "eps":
        return pred
    if parameterization == "x0":
        return predict_eps_from_x0(schedule, x_t, t, pred)      # (2.4) solved for ε: the package's one copy
    a, s = _a_s(schedule, t, x_t)
    return s * x_t + a * pred


def to_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t, pred: torch.Tensor, parameterization: str) -> torch.Tensor:
    """x₀ from a prediction, eq. (5.6): x₀ = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t for ε, x₀ = √ᾱ_t x_t − √(1−ᾱ_t) v for v."""
    _check(schedule, parameterization)
    checks.same_shape(pred, x_t, "pred", "x_t")
    if parameterization == "x0":
        return pred
    if parameterization == "eps":
        return predict_x0_from_eps(schedule, x_t, t, pred)      # (2.4) solved for x₀: the package's one copy
    a, s = _a_s(schedule, t, x_t)
    return a * x_t - s * pred


def to_v(schedule: NoiseSchedule, x_t: torch.Tensor, t, pred: torch.Tensor, parameterization: str) -> torch.Tensor:
    """v from a prediction, eq. (5.6): v = (ε − √(1−ᾱ_t) x_t)/√ᾱ_t for ε, v = (√ᾱ_t x_t − x₀)/√(1−ᾱ_t) for x₀."""
    _check(schedule, parameterization)
    checks.same_shape(pred, x_t, "pred", "x_t")
    if parameterization == "v":
        return pred
    a, s = _a_s(schedule, t, x_t)
    if parameterization == "eps":
        return (pred - s * x_t) / a
    return (a * x_t - pred) / s


_CONVERTERS = {"eps": to_eps, "x0": to_x0, "v": to_v}


def convert(schedule: NoiseSchedule, x_t: torch.Tensor, t, pred: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """A prediction in parameterization ``source`` expressed in parameterization ``target`` (eq. 5.6)."""
    _check(schedule, source)
    _check(schedule, target)
    return _CONVERTERS[target](schedule, x_t, t, pred, source)


def eps_mse_weight(schedule: NoiseSchedule, parameterization: str) -> torch.Tensor:
    """Per code index t, the factor w_t with ‖ε − ε̂‖² = w_t ‖p − p̂‖² for a prediction p of the given
    parameterization at fixed x_t, eq. (5.7): 1 for ε, SNR_t = ᾱ_t/(1−ᾱ_t) for x₀, ᾱ_t for v. Float64, length T.

    Training with MSE on p is therefore training with ε-MSE weighted by 1/w_t over the steps."""
    _check(schedule, parameterization)
    if parameterization == "eps":
        return torch.ones_like(schedule.alpha_bars)
    if parameterization == "x0":
        return schedule.alpha_bars / (1.0 - schedule.alpha_bars)
    return schedule.alpha_bars.clone()


def min_snr_weights(schedule: NoiseSchedule, t: torch.Tensor, gamma: float = 5.0,
                    prediction: str = "eps") -> torch.Tensor:
    """Per-example loss weights of min-SNR-γ (Hang et al. 2023) with SNR_t = ᾱ_t / (1 − ᾱ_t): on the squared
    error of ε, min(SNR_t, γ) / SNR_t — the low-noise steps, whose ε is hardest to read and matters least, count
    less. The same weighting of the *ε-error* on the error of another target p, by eq. (5.7)
    (‖ε − ε̂‖² = SNR_t ‖x₀ − x̂₀‖² = ᾱ_t ‖v − v̂‖²): min(SNR_t, γ) for x₀, min(SNR_t, γ) / (SNR_t + 1) for v.
    float64 from the schedule's tables, shape (B,), on t's device (gathered there: no host round trip per step)."""
    check_prediction(prediction)
    snr = schedule.table("snr", t.device)[t]
    clipped = torch.clamp(snr, max=gamma)
    if prediction == "x0":
        return clipped
    return clipped / (snr + 1.0) if prediction == "v" else clipped / snr


class EpsFromPrediction(torch.nn.Module):
    """Wrap a network that predicts x₀ or v into an ε-model ``model(x_t, t, y=None) -> ε`` (eq. 5.6), so the
    samplers, guidance and the bound work unchanged. ``net`` is called as ``net(x_t, t)`` or ``net(x_t, t, y=y)``."""

    def __init__(self, net: torch.nn.Module, schedule: NoiseSchedule, parameterization: str):
        super().__init__()
        _check(schedule, parameterization)
        self.net, self.schedule, self.parameterization = net, schedule, parameterization

    @property
    def num_classes(self):
        """The wrapped network's number of classes (None if unconditional), for classifier-free guidance."""
        net = self.net
        k = getattr(net, "num_classes", None)
        return k if k is not None else getattr(getattr(net, "config", None), "num_classes", None)

    @property
    def config(self):
        """The wrapped network's config (diffusion_lab.models keep the number of classes and the image shape there)."""
        return getattr(self.net, "config", None)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        pred = self.net(x_t, t) if y is None else self.net(x_t, t, y=y)
        return to_eps(self.schedule, x_t, t, pred, self.parameterization)

    def __repr__(self):
        return f"EpsFromPrediction({type(self.net).__name__}, parameterization={self.parameterization!r})"


def as_eps_model(net: torch.nn.Module, schedule: NoiseSchedule | None, prediction: str = "eps") -> torch.nn.Module:
    """``net`` itself for an ε-network; an x₀- or v-network wrapped into an ε-model (eq. 5.6) for the samplers —
    the package's one ε-wrap (the trainer's :attr:`~diffusion_lab.train.TrainResult.sampling_model`, checkpoints
    and the loaders all call it)."""
    if check_prediction(prediction) == "eps":
        return net
    if schedule is None:
        raise ValueError(f"a {prediction}-prediction network needs its schedule to be turned into an ε-model")
    return EpsFromPrediction(net, schedule, prediction)
