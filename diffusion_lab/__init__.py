"""diffusion-lab: the package behind the book. Diffusion math is stateless over a schedule and a callable
``model(x_t, t, y=None) -> ε``; each chapter's code lives in the module of the same name:

  schedules, diffusion      ch. 2–3  forward process, posterior, μ_θ, L_simple
  likelihood                ch. 4    KL, discretized decoder, VLB, bits/dim
  gaussian_mixture          ch. 3–4, 6–8  the exact oracle (any Gaussian mixture, with labels and the exact
                                      classifier) for checking everything else
  parameterization          ch. 5    what a network predicts (ε, x₀, v): targets, conversions, loss weights
  models, train, checkpoint ch. 5    UNet / MLP / noisy classifier, the training loop (optim: LR and EMA; runtime:
                                      devices, precision, processes), safetensors checkpoints and LoadedModel
  sampling                  ch. 6, 9 DDPM, DDIM, DDIM inversion, DPM-Solver++(2M)
  flow_matching             ch. 9    flow matching: loss, Euler and Heun samplers, training
  guidance                  ch. 7–8  classifier guidance, classifier-free guidance
  metrics                   ch. 6–8  digits judge, Fréchet distance, diversity
  data, widgets, plotting   everywhere (plotting also writes the CLI's sample grids)
  profile                   everywhere
  checks, errors            everywhere: validation at the public boundary, the error families users can catch
"""
from . import data, diffusion, likelihood, schedules
from .profile import by_profile, get_profile
from .schedules import NoiseSchedule, cosine_schedule, linear_schedule

__version__ = "0.1.0"
REPO_URL = "https://github.com/diffusion-lab/diffusion-lab"

__all__ = ["data", "diffusion", "likelihood", "schedules", "NoiseSchedule", "linear_schedule", "cosine_schedule",
           "get_profile", "by_profile", "REPO_URL", "__version__"]
