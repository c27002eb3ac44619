"""diffusion-lab: the package behind the book. Diffusion math is stateless over a schedule and a
callable ``model(x_t, t, y=None) -> ε``; see the book's chapters for each module."""
from . import data, diffusion, likelihood, schedules
from .profile import by_profile, get_profile
from .schedules import NoiseSchedule, cosine_schedule, linear_schedule

__version__ = "0.1.0"
REPO_URL = "https://github.com/diffusion-lab/diffusion-lab"

__all__ = ["data", "diffusion", "likelihood", "schedules", "NoiseSchedule", "linear_schedule", "cosine_schedule",
           "get_profile", "by_profile", "REPO_URL", "__version__"]
