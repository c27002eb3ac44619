"""Shipped weights, made by our own CLI on a 2-core CPU (book chapters 6–8 load them for headline figures).

    from diffusion_lab import pretrained
    model, schedule = pretrained.load("digits-cond")        # eval mode, EMA weights (a LoadedModel; it unpacks)
    pretrained.list_pretrained()                              # the known names

Each model is ``<name>.safetensors`` (the EMA weights only, stored as the model weights; no optimiser state) +
``<name>.json`` (the checkpoint JSON: model kind and config, schedule, training metadata) + ``<name>.md``
(a model card: the exact command, steps, batch, wall time, measured metrics, sha256). ``MANIFEST.json`` lists
every name with its files and the sha256 of its weights; :func:`load` checks that sha256 before reading a byte
of the tensors. Errors are :class:`PretrainedError` s (a ``RuntimeError``): an unknown name raises
:class:`UnknownPretrainedError`, also a ``LookupError``; weights whose sha256 differs from the manifest's raise
:class:`CorruptPretrainedError`, also a ``ValueError`` naming the file; a missing file raises plain
:class:`PretrainedError`.

``digits-judge`` is the clean classifier of :mod:`diffusion_lab.metrics` (``metrics.get_judge()`` loads its file
from this folder, so the judge is never retrained); ``load("digits-judge")`` unpacks as ``(judge, None)``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..checkpoint import LoadedModel, checkpoint_files, file_sha256, load_checkpoint, save_checkpoint
from ..errors import CorruptFileError, UnknownNameError
from ..data import load_digits
from ..models.judge import JUDGE_ARCH, load_judge, save_judge
from ..optim import ema_smoothed

__all__ = ["PretrainedError", "UnknownPretrainedError", "CorruptPretrainedError", "load", "list_pretrained", "info",
           "pretrained_dir", "manifest", "export", "MANIFEST_NAME"]

MANIFEST_NAME = "MANIFEST.json"


class PretrainedError(RuntimeError):
    """An unknown name, a missing file, or weights whose sha256 differs from the manifest's."""


class UnknownPretrainedError(UnknownNameError, PretrainedError):
    """A name the manifest does not list (a LookupError as well as a PretrainedError)."""


class CorruptPretrainedError(CorruptFileError, PretrainedError):
    """A shipped file whose sha256 differs from the manifest's, or an unreadable manifest (also a ValueError)."""


def pretrained_dir() -> Path:
    """The folder holding the shipped files (this package's directory)."""
    return Path(__file__).resolve().parent


def manifest() -> dict:
    """The parsed ``MANIFEST.json``: ``{"models": {name: {...}}}``."""
    path = pretrained_dir() / MANIFEST_NAME
    if not path.exists():
        raise PretrainedError(f"{path} is missing: the package was installed without its pretrained data "
                              "(pyproject's package-data must include *.json, *.safetensors, *.md)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CorruptPretrainedError(f"{path} is not valid JSON: {err}", path=path) from err


def list_pretrained() -> list[str]:
    """The names :func:`load` knows, sorted."""
    return sorted(manifest()["models"])


def info(name: str) -> dict:
    """The manifest entry of ``name`` plus its checkpoint JSON (``"model"``, ``"schedule"``, ``"extra"``, …)."""
    entry = _entry(name)
    out = dict(entry)
    cfg = pretrained_dir() / entry["config"]
    if cfg.exists():
        out.update(json.loads(cfg.read_text()))
    out["name"] = name
    return out


def _entry(name: str) -> dict:
    if not isinstance(name, str):
        raise TypeError(f"a pretrained model's name is a str such as 'digits-cond', got {type(name).__name__}")
    models = manifest()["models"]
    if name not in models:
        raise UnknownPretrainedError(f"unknown pretrained model {name!r}; known names: {', '.join(sorted(models))}",
                                     given=name, allowed=sorted(models))
    return models[name]


def _verified_files(name: str) -> tuple[Path, Path, dict]:
    entry = _entry(name)
    folder = pretrained_dir()
    weights, config = folder / entry["weights"], folder / entry["config"]
    for p in (weights, config):
        if not p.exists():
            raise PretrainedError(f"pretrained model {name!r}: file {p} is missing (a broken install or checkout?)")
    digest = file_sha256(weights)
    if digest != entry["sha256"]:
        raise CorruptPretrainedError(f"pretrained model {name!r}: sha256 mismatch for {weights}: the manifest records "
                              f"{entry['sha256']}, the file has {digest} (corrupt, truncated or replaced; reinstall "
                                     "the package or restore the file from git)", path=weights)
    return weights, config, entry


def load(name: str, device="cpu") -> LoadedModel:
    """The shipped model ``name`` as a :class:`~diffusion_lab.checkpoint.LoadedModel` (``source="shipped"``):
    eval mode and frozen on ``device``, with the schedule it was trained with (``None`` for the judge). It unpacks
    as ``model, schedule = pretrained.load(name)``. The weights' sha256 is checked against ``MANIFEST.json``
    first."""
    weights, config, entry = _verified_files(name)
    if entry.get("kind") == "judge":
        judge = load_judge(weights).to(device)
        return LoadedModel.of(judge, None, source="shipped", meta=dict(entry, name=name))
    # The sha256 was just checked; load_checkpoint checks it again against the JSON's record.
    loaded = load_checkpoint(config, device=device, use_ema=False, sha256=entry["sha256"])
    return dataclasses.replace(loaded, source="shipped", meta=dict(loaded.meta, name=name))


# ----------------------------------------------------------------------------- making the shipped files
def export(checkpoint, name: str, *, kind: str = "model", card: str | None = None) -> dict:
    """Write ``<name>.safetensors`` + ``<name>.json`` here from a training checkpoint — its EMA weights (or the
    plain weights without EMA) as the model weights, no optimiser state — and record it in ``MANIFEST.json``.
    ``kind="judge"`` copies a judge file written by :func:`diffusion_lab.metrics.save_judge` instead."""
    folder = pretrained_dir()
    if kind == "judge":
        judge = load_judge(checkpoint)
        weights = save_judge(judge, folder / f"{name}.safetensors")
        acc = judge.accuracy(*load_digits("test"))
        (folder / f"{name}.json").write_text(json.dumps(
            {"kind": "judge", "arch": JUDGE_ARCH, "test_accuracy": round(acc, 6),
             "trained_by": "python -m diffusion_lab.metrics --save PATH (train_judge(epochs=25, seed=0))"}, indent=1))
    else:
        loaded = load_checkpoint(checkpoint, device="cpu", use_ema=True)
        meta = loaded.meta
        extra = dict(meta.get("extra", {}), source_step=meta["step"], source_weights=meta["weights"],
                     train_config=meta.get("train_config", {}))
        state = checkpoint_files(checkpoint)["state"]
        if state.exists() and "final_loss_ema" not in extra:
            from safetensors.torch import load_file

            losses = load_file(str(state)).get("losses")
            if losses is not None:
                extra["final_loss_ema"] = round(ema_smoothed(losses.tolist()), 5)
        path = save_checkpoint(folder / name, loaded.model, loaded.schedule, step=meta["step"],
                               train_config=meta.get("train_config", {}), extra=extra)
        weights = checkpoint_files(path)["weights"]
    for p in folder.glob(f"{name}.*"):
        p.chmod(0o644)  # package data: readable by everyone
    man_path = folder / MANIFEST_NAME
    man = json.loads(man_path.read_text()) if man_path.exists() else {"format": "diffusion-lab/pretrained", "models": {}}
    man["models"][name] = {"kind": kind, "weights": f"{name}.safetensors", "config": f"{name}.json",
                           "card": f"{name}.md", "sha256": file_sha256(weights), "bytes": weights.stat().st_size}
    man["models"] = dict(sorted(man["models"].items()))
    man_path.write_text(json.dumps(man, indent=1) + "\n")
    return man["models"][name]
