"""The reader's own models: chapter 5 trains one, chapters 6–8 sample from it.

Chapter 5 trains a conditional digits model live (in the ``cpu`` profile within the chapter's budget, in the
``gpu`` profile to full quality) and saves it with :func:`save_reader_model`. Chapters 6–8 call
:func:`load_reader_or_shipped`, which returns that model when it exists and otherwise falls back to the shipped
checkpoint of the same name in :mod:`diffusion_lab.pretrained`, printing which one it loaded.

    from diffusion_lab import reader_models
    reader_models.save_reader_model("digits-cond", result, schedule)          # chapter 5
    loaded = reader_models.load_reader_or_shipped("digits-cond")   # chapters 6–8: .model, .schedule, .source

The folder is ``$DIFFUSION_LAB_HOME/models`` (default ``~/.cache/diffusion-lab/models``); set the variable to
keep the models elsewhere (for example on a mounted drive in Colab). Each model is an ordinary checkpoint
(:mod:`diffusion_lab.checkpoint`: safetensors + JSON, no pickle).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from . import pretrained
from .checkpoint import CheckpointError, LoadedModel, checkpoint_files, load_checkpoint, save_checkpoint

__all__ = ["ENV_VAR", "home", "reader_model_path", "has_reader_model", "save_reader_model",
           "load_reader_or_shipped", "SOURCES"]

ENV_VAR = "DIFFUSION_LAB_HOME"
SOURCES = ("reader", "shipped")


def home() -> Path:
    """``$DIFFUSION_LAB_HOME`` if set, else ``~/.cache/diffusion-lab``."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "diffusion-lab"


def _check_name(name) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"a reader model's name is a plain file stem such as 'digits-cond', got {name!r}")
    return name


def reader_model_path(name: str) -> Path:
    """The checkpoint JSON of the reader's model ``name`` (it may not exist yet)."""
    return checkpoint_files(home() / "models" / _check_name(name))["json"]


def has_reader_model(name: str) -> bool:
    """Whether chapter 5 (or the reader) has saved a model called ``name``."""
    files = checkpoint_files(reader_model_path(name))
    return files["json"].exists() and files["weights"].exists()


def save_reader_model(name: str, result, schedule, *, extra: dict | None = None) -> Path:
    """Save a :class:`diffusion_lab.train.TrainResult` as the reader's model ``name`` (EMA weights included when
    the run had EMA) and return the checkpoint JSON's path."""
    for attr in ("model", "ema_model", "steps", "config"):
        if not hasattr(result, attr):
            raise TypeError(f"result must be the TrainResult returned by diffusion_lab.train.train, "
                            f"got {type(result).__name__} (no attribute {attr!r})")
    path = reader_model_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"trained_by": "the reader (book chapter 5)", "wall_time_s": round(float(result.wall_time), 1),
            "device": result.device}
    info.update(extra or {})
    return save_checkpoint(path, result.model, schedule, ema=result.ema_model, step=result.steps,
                           train_config=result.config, extra=info)


def load_reader_or_shipped(name: str = "digits-cond", device="cpu", *, verbose: bool = True) -> LoadedModel:
    """The reader's model ``name`` if it was saved (EMA weights, eval mode, frozen), else the shipped checkpoint of
    that name, as a :class:`~diffusion_lab.checkpoint.LoadedModel` whose ``source`` is ``"reader"`` or
    ``"shipped"``. A reader's checkpoint that cannot be read is reported and skipped, never silently."""
    if has_reader_model(name):
        path = reader_model_path(name)
        try:
            loaded = load_checkpoint(path, device=device, use_ema=True)
        except CheckpointError as err:
            print(f"note: your model {path} could not be read ({err}); using the shipped {name!r} instead")
        else:
            if verbose:
                print(f"loaded your own {name!r}, trained in chapter 5 ({loaded.meta['step']} steps): {path}")
            return dataclasses.replace(loaded, source="reader")
    loaded = pretrained.load(name, device=device)
    if verbose:
        print(f"note: no model of yours called {name!r} under {home() / 'models'} (run chapter 5 to train one); "
              f"using the shipped checkpoint {name!r}")
    return loaded
