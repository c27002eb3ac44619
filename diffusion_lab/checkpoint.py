"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint at ``path`` (``runs/digits`` or ``runs/digits.json`` / ``.safetensors``) is up to three files:

* ``<stem>.safetensors`` — the weights: ``model.<name>`` and, when EMA weights exist, ``ema.<name>``;
* ``<stem>.state.safetensors`` — only for resuming training: optimiser tensors (flattened to
  ``optim.<param index>.<name>``), RNG states as uint8 tensors (``rng.<name>``), the EMA's ``n_averaged``
  and the loss history;
* ``<stem>.json`` — the model kind and config (so :func:`diffusion_lab.models.model_from_config` rebuilds it),
  what the network predicts (``"prediction"``: ε, x₀ or v; :func:`load_checkpoint` returns an ε-model either way),
  the schedule (``NoiseSchedule.to_config()``), the step, training metadata, the optimiser's param groups and
  LR-scheduler state, and the size and sha256 of each tensor file.

Each file is written to a temporary name and moved into place with ``os.replace``; the JSON is written last,
and its recorded sha256 catches a tensor file that is truncated, corrupt or from another save.
``torch.load`` (pickle) is never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .errors import CorruptFileError
from .models import freeze, item_shape_of, model_config, model_from_config, num_classes_of, unwrap_model, wrapper_layers
from .parameterization import PARAMETERIZATIONS, EpsFromPrediction, as_eps_model, check_prediction
from .schedules import NoiseSchedule, check_schedule, get_schedule

__all__ = ["CheckpointError", "LoadedModel", "save_checkpoint", "load_checkpoint", "load_weights", "load_training_state",
           "checkpoint_files", "file_sha256", "unwrap_model", "read_checkpoint_json", "record_run", "FORMAT",
           "VERSION"]

FORMAT = "diffusion-lab/checkpoint"
VERSION = 1


class CheckpointError(CorruptFileError, RuntimeError):
    """A checkpoint that cannot be read: missing, truncated, corrupt, or for another architecture. A RuntimeError
    (as always) and a :class:`~diffusion_lab.errors.CorruptFileError`, so also a ValueError; the message names
    the file."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to use, as every loader returns it (:func:`load_checkpoint`, ``pretrained.load``,
    ``reader_models.load_reader_or_shipped``, ``presets.build``, the CLI's ``resolve_model``).

    ``model`` is what the samplers call: a denoiser as an ε-model ``model(x_t, t, y=None) -> ε`` (an x₀- or
    v-network comes wrapped, :func:`~diffusion_lab.parameterization.as_eps_model`), a classifier as
    ``model(x_t, t) -> logits``; ``network`` is the bare network inside. ``prediction`` is what the network
    outputs, ``num_classes`` its classes (None: unconditional), ``item_shape`` the shape of one sample,
    ``kind`` the registered model kind (``"unet"``, ``"mlp"``, ``"noisy_classifier"``, ``"judge"``),
    ``source`` where it came from (``"checkpoint"``, ``"shipped"``, ``"reader"``, ``"preset"``) and ``meta`` the
    rest (the checkpoint's JSON, a path, a preset's data …).

    It unpacks as ``model, schedule = loaded`` (the pair ``pretrained.load`` has always returned), and the
    samplers take it in place of the model, with its schedule (``ddim_sample(loaded, None, shape)``)."""

    model: nn.Module
    schedule: NoiseSchedule | None
    prediction: str = "eps"
    num_classes: int | None = None
    item_shape: tuple | None = None
    kind: str | None = None
    source: str = "checkpoint"
    meta: dict = field(default_factory=dict)

    @classmethod
    def of(cls, model: nn.Module, schedule: NoiseSchedule | None, *, prediction: str = "eps", source: str,
           meta: dict | None = None, frozen: bool = True) -> "LoadedModel":
        """The record of a network: wrapped into an ε-model for its ``prediction``, frozen (eval mode, no
        gradients) unless ``frozen=False``, its classes, item shape and kind read from the network itself."""
        net = unwrap_model(model)
        if frozen:
            freeze(net)
        return cls(model=as_eps_model(model, schedule, prediction) if model is net else model, schedule=schedule,
                   prediction=check_prediction(prediction), num_classes=num_classes_of(net),
                   item_shape=item_shape_of(net), kind=getattr(net, "kind", None), source=source, meta=dict(meta or {}))

    @property
    def network(self) -> nn.Module:
        """The bare network (no ε-wrapper): the one to train or to save."""
        return unwrap_model(self.model)

    def __iter__(self):
        yield self.model
        yield self.schedule

    def __repr__(self):
        return (f"LoadedModel({type(self.model).__name__}, kind={self.kind!r}, source={self.source!r}, "
                f"prediction={self.prediction!r}, num_classes={self.num_classes}, item_shape={self.item_shape}, "
                f"schedule={self.schedule!r})")


def checkpoint_files(path) -> dict[str, Path]:
    """The files of the checkpoint at ``path``: ``{"json", "weights", "state"}``."""
    p = Path(path)
    name = p.name
    for suffix in (".state.safetensors", ".safetensors", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = p.with_name(name)
    return {"json": stem.with_name(name + ".json"), "weights": stem.with_name(name + ".safetensors"),
            "state": stem.with_name(name + ".state.safetensors")}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save_tensors(path: Path, tensors: dict) -> dict:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _read_tensors(path: Path, record: dict | None, expected_sha256: str | None = None) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing")
    if record is not None or expected_sha256 is not None:
        digest = file_sha256(path)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise CheckpointError(f"sha256 mismatch for {path}: expected {expected_sha256}, got {digest}")
        if record is not None and digest != record.get("sha256", digest):
            size = path.stat().st_size
            raise CheckpointError(
                f"{path} is truncated or corrupt, or belongs to another save: its sha256 ({digest[:12]}…, {size} bytes) "
                f"differs from the one recorded in the checkpoint's JSON ({record['sha256'][:12]}…, {record.get('bytes')} bytes)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from err


def _flatten_optimizer(optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, meta = {}, {}
    for idx, state in sd["state"].items():
        for name, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = v
            else:
                meta.setdefault(str(idx), {})[name] = v
    return tensors, {"class": type(optimizer).__name__, "param_groups": sd["param_groups"], "state_meta": meta}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, extra in meta.get("state_meta", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path, model: nn.Module, schedule: NoiseSchedule, *, ema: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, lr_scheduler=None, step: int = 0,
                    train_config: dict | None = None, extra: dict | None = None,
                    rng_states: dict[str, torch.Tensor] | None = None, losses=None) -> Path:
    """Write a checkpoint (see the module docstring) and return the path of its JSON file.

    ``model`` carries its own kind and config (a registered :mod:`diffusion_lab.models` network, possibly wrapped
    in DDP, ``torch.compile`` or an ``EpsFromPrediction``); ``schedule`` is stored as ``schedule.to_config()``.
    What the network predicts is recorded as ``"prediction"``: the wrapper's parameterization, else
    ``train_config["prediction"]``, else ``"eps"``. ``ema`` is an
    ``AveragedModel`` or a plain module of the same architecture. Passing ``optimizer`` (and optionally
    ``lr_scheduler``, ``rng_states``, ``losses``) also writes the training state needed to resume exactly.
    """
    check_schedule(schedule)
    files = checkpoint_files(path)
    net = unwrap_model(model)
    prediction = _prediction_of(model, train_config)
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in unwrap_model(ema).state_dict().items()})
    doc = {
        "format": FORMAT, "version": VERSION,
        "model": model_config(net),
        "prediction": prediction,
        "schedule": schedule.to_config(),
        "step": int(step),
        "has_ema": ema is not None,
        "train_config": train_config or {},
        "extra": extra or {},
        "torch_version": torch.__version__,
        "files": {"weights": _save_tensors(files["weights"], tensors)},
    }
    if optimizer is not None:
        state_tensors, opt_meta = _flatten_optimizer(optimizer)
        for name, s in (rng_states or {}).items():
            state_tensors[f"rng.{name}"] = s
        if isinstance(ema, torch.optim.swa_utils.AveragedModel):
            state_tensors["ema_n_averaged"] = ema.n_averaged
        if losses is not None:
            state_tensors["losses"] = torch.as_tensor(list(losses), dtype=torch.float64)
        doc["optimizer"] = opt_meta
        doc["lr_scheduler"] = lr_scheduler.state_dict() if lr_scheduler is not None else None
        doc["files"]["state"] = _save_tensors(files["state"], state_tensors)
    text = json.dumps(doc, indent=1)
    _atomic_write(files["json"], lambda tmp: Path(tmp).write_text(text))
    return files["json"]


def _prediction_of(model: nn.Module, train_config: dict | None) -> str:
    """What ``model`` predicts: an EpsFromPrediction wrapper's parameterization (inside any DDP / compile / EMA
    wrapper), else ``train_config["prediction"]``, else ``"eps"``; a disagreement of the two is an error."""
    wrapped = next((m.parameterization for m in wrapper_layers(model) if isinstance(m, EpsFromPrediction)), None)
    configured = (train_config or {}).get("prediction")
    if wrapped and configured and wrapped != configured:
        raise ValueError(f"the model is an EpsFromPrediction({wrapped!r}) but train_config says "
                         f"prediction={configured!r}; pass one that matches")
    return check_prediction(wrapped or configured or "eps", "train_config['prediction']")


def read_checkpoint_json(path) -> dict:
    """The checkpoint's JSON document (checked to be one), without reading any tensor."""
    files = checkpoint_files(path)
    if not files["json"].exists():
        raise CheckpointError(f"no checkpoint at {path}: {files['json']} does not exist")
    try:
        doc = json.loads(files["json"].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{files['json']} is not valid JSON (truncated or corrupt?): {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{files['json']} is not a diffusion-lab checkpoint (format {doc.get('format')!r})"
                              if isinstance(doc, dict) else f"{files['json']} is not a diffusion-lab checkpoint")
    return doc


def _load_strict(module: nn.Module, state: dict, what: str) -> None:
    """``load_state_dict(strict=True)`` with one readable error listing every missing / unexpected / mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        def show(items):
            return ", ".join(items[:8]) + (f", … ({len(items)} in all)" if len(items) > 8 else "")
        parts = [f"missing keys: {show(missing)}" if missing else "",
                 f"unexpected keys: {show(unexpected)}" if unexpected else "",
                 f"shape mismatches: {show(shapes)}" if shapes else ""]
        raise CheckpointError(f"{what} does not fit {type(module).__name__} — the checkpoint is from another "
                              f"architecture or config. " + "; ".join(p for p in parts if p))
    module.load_state_dict(state, strict=True)


def _split(tensors: dict, prefix: str) -> dict:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_weights(model: nn.Module, path, *, use_ema: bool = False, sha256: str | None = None) -> dict:
    """Load a checkpoint's weights into an existing ``model`` (strict). Returns the checkpoint's JSON."""
    doc = read_checkpoint_json(path)
    files = checkpoint_files(path)
    tensors = _read_tensors(files["weights"], doc.get("files", {}).get("weights"), sha256)
    prefix = "ema." if use_ema and doc.get("has_ema") else "model."
    _load_strict(unwrap_model(model), _split(tensors, prefix), f"checkpoint {files['weights']} ({prefix[:-1]} weights)")
    return doc


def load_checkpoint(path, *, device="cpu", use_ema: bool = True, sha256: str | None = None) -> LoadedModel:
    """Rebuild the model of a checkpoint as a :class:`LoadedModel`: eval mode on ``device``, frozen, and always
    an ε-model ``model(x_t, t, y=None) -> ε`` — a network that predicts x₀ or v (``.prediction``) comes
    wrapped in :class:`~diffusion_lab.parameterization.EpsFromPrediction` (``.network`` is the bare network).

    ``use_ema`` picks the EMA weights when the checkpoint has them (the ones to sample with).
    ``sha256``, when given, must equal the sha256 of the weights file. ``.meta`` is the checkpoint's JSON
    plus ``"weights": "ema" | "model"``, ``"prediction"`` and ``"path"``.
    """
    doc = read_checkpoint_json(path)
    try:
        model = model_from_config(doc["model"])
        schedule = get_schedule(doc["schedule"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild the model/schedule from its JSON: {err}") from err
    load_weights(model, path, use_ema=use_ema, sha256=sha256)
    prediction = doc.get("prediction", "eps")        # checkpoints written before "prediction" existed are ε-models
    try:
        check_prediction(prediction)
    except ValueError:
        raise CheckpointError(f"checkpoint {path}: unknown prediction {prediction!r} (expected one of "
                              f"{PARAMETERIZATIONS})") from None
    meta = dict(doc, weights="ema" if use_ema and doc.get("has_ema") else "model", prediction=prediction,
                path=str(checkpoint_files(path)["json"]))
    return LoadedModel.of(model.to(device), schedule, prediction=prediction, source="checkpoint", meta=meta)


def load_training_state(path, model: nn.Module, *, ema=None, optimizer=None, lr_scheduler=None) -> dict:
    """Restore everything :func:`save_checkpoint` wrote for resuming into live objects.

    Checks the model kind/config first (a clear error for another architecture). Returns ``{"step",
    "rng_states", "losses", "train_config", "meta"}``.
    """
    doc = read_checkpoint_json(path)
    files = checkpoint_files(path)
    mine = model_config(model)
    if json.loads(json.dumps(mine)) != doc["model"]:
        raise CheckpointError(f"cannot resume from {files['json']}: it holds a {doc['model']['kind']} with config "
                              f"{doc['model']['config']}, but the model to train is a {mine['kind']} with config "
                              f"{mine['config']}")
    weights = _read_tensors(files["weights"], doc["files"].get("weights"))
    _load_strict(unwrap_model(model), _split(weights, "model."), f"checkpoint {files['weights']}")
    if "state" not in doc["files"]:
        raise CheckpointError(f"{files['json']} holds no training state (saved without an optimizer); cannot resume")
    state = _read_tensors(files["state"], doc["files"]["state"])
    if ema is not None:
        if not doc.get("has_ema"):
            raise CheckpointError(f"{files['json']} has no EMA weights but training uses EMA")
        _load_strict(unwrap_model(ema), _split(weights, "ema."), f"checkpoint {files['weights']} (EMA)")
        if isinstance(ema, torch.optim.swa_utils.AveragedModel) and "ema_n_averaged" in state:
            ema.n_averaged.copy_(state["ema_n_averaged"])
    if optimizer is not None:
        optimizer.load_state_dict(_unflatten_optimizer(state, doc["optimizer"]))
    if lr_scheduler is not None and doc.get("lr_scheduler") is not None:
        lr_scheduler.load_state_dict(doc["lr_scheduler"])
    return {"step": int(doc["step"]), "rng_states": _split(state, "rng."),
            "losses": state["losses"].tolist() if "losses" in state else [],
            "train_config": doc.get("train_config", {}), "meta": doc}


def record_run(path, run: dict, *, previous_runs=(), **extra) -> dict:
    """Record how a training run was made in the checkpoint's JSON, in place: ``run`` is appended to
    ``previous_runs`` as ``extra["cli_runs"]`` (``extra["wall_time_s"]`` becomes their total) and the other
    keyword arguments update ``extra``. The tensor files, and the sha256 recorded for them, are untouched.
    Returns the new JSON document."""
    doc = read_checkpoint_json(path)
    runs = list(previous_runs) + [dict(run)]
    doc.setdefault("extra", {}).update(extra)
    doc["extra"].update({"cli_runs": runs, "wall_time_s": round(sum(r.get("wall_time_s", 0.0) for r in runs), 2)})
    text = json.dumps(doc, indent=1)
    _atomic_write(checkpoint_files(path)["json"], lambda tmp: Path(tmp).write_text(text))
    return doc
