"""No host-device sync inside a sampling step (issue 13, item 2), checked on the CPU: every call that would read
a value back from a GPU (``.item()``, ``.cpu()``, ``bool(tensor)``, ``int(tensor)``, ``.tolist()`` …) is counted
with a TorchFunctionMode while the samplers run the shipped digits models with CFG and with classifier guidance.
The count must not grow with the number of steps: whatever checks there are happen once, at the boundary.
(On a GPU the same is checked with ``torch.cuda.set_sync_debug_mode("error")``; see benchmarks/sampler_overhead.py.)"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from diffusion_lab import pretrained
from diffusion_lab.guidance import ClassifierFreeGuidance, ClassifierGuidance
from diffusion_lab.sampling import ddim_sample, ddpm_sample
from diffusion_lab.schedules import linear_schedule

SYNCING = {"item", "cpu", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "nonzero"}


class CountSyncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def models():
    cond, sch = pretrained.load("digits-cond")
    uncond, _ = pretrained.load("digits-uncond")
    clf, _ = pretrained.load("digits-noisy-classifier")
    return cond, uncond, clf, sch


def _count(run):
    with CountSyncs() as c:
        run()
    return c.calls


@pytest.mark.parametrize("case", ["ddim-cfg", "ddim-cfg-interval", "ddim-cg", "ddim-eta", "ddpm-cfg", "ddpm-cg",
                                  "ddpm-plain"])
def test_sampling_steps_make_no_host_sync(models, case):
    cond, uncond, clf, sch = models
    y = torch.tensor([1, 4, 7])
    g = torch.Generator().manual_seed(0)
    cfg = ClassifierFreeGuidance(2.0, interval=(0, 500) if "interval" in case else None)
    cg = ClassifierGuidance(clf, 2.0)

    def run(n):
        kw = dict(y=y, generator=g, progress=False)
        if case.startswith("ddim"):
            model, guid = (uncond, cg) if case.endswith("cg") else (cond, cfg)
            return lambda: ddim_sample(model, sch, (3, 1, 8, 8), steps=n, eta=0.5 if case == "ddim-eta" else 0.0,
                                       guidance=guid, **kw)
        short = linear_schedule(n, 1e-3, 0.2)          # DDPM over a short schedule: every step is a real step
        model, guid = {"ddpm-cfg": (cond, cfg), "ddpm-cg": (uncond, cg), "ddpm-plain": (cond, None)}[case]
        return lambda: ddpm_sample(model, short, (3, 1, 8, 8), guidance=guid, **kw)

    few, many = _count(run(4)), _count(run(12))
    print(f"{case}: host reads with 4 steps: {len(few)} {sorted(set(few))}, with 12 steps: {len(many)}")
    assert len(many) == len(few), f"{len(many) - len(few)} host syncs over 8 extra steps: {many}"
