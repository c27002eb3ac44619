"""What the sampler costs beyond its network calls (issue 13): ``ddim_sample`` (50 steps, classifier-free guidance
w = 2, batch 256, the shipped ``digits-cond``) against a bare loop that makes the very same network calls and the
same DDIM update with precomputed Python-float coefficients, in one process, interleaved, median of the repeats.

    python benchmarks/sampler_overhead.py [--repeats 7] [--threads 2] [--device cpu|cuda] [--json out.json]

Prints one ``overhead:`` line: median seconds of each and their ratio (target: within 2 %, ratio <= 1.02). The two
outputs are also compared (they are the same computation, so they agree to float round-off). Because a busy,
shared CPU makes run-to-run noise larger than 2 %, each run also times its own network calls (a thin timing
wrapper around the model): ``outside_network`` is the time a run spends outside them — the sampler's own cost —
as a fraction of its network time, measured within the same run, so load drift between runs cancels.

With ``--device cuda`` it first runs DDPM and DDIM with CFG and with classifier guidance under
``torch.cuda.set_sync_debug_mode("warn")`` and counts the syncs of a short and a long run: a sync inside the steps
shows as a count that grows with the steps (not yet run on a GPU: this project's CPU-only sessions could not).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffusion_lab import pretrained
from diffusion_lab.guidance import ClassifierFreeGuidance, ClassifierGuidance
from diffusion_lab.sampling import ddim_sample, ddim_timesteps, ddpm_sample

STEPS, W, BATCH = 50, 2.0, 256


def bare_ddim_cfg(model, schedule, x_T, y, steps=STEPS, w=W):
    """The same 50 batched network calls and DDIM (η = 0) updates as ddim_sample with CFG, nothing else."""
    taus = ddim_timesteps(schedule.T, steps).tolist()
    ab = [1.0] + schedule.alpha_bars.tolist()
    B = x_T.shape[0]
    y_in = torch.cat([y, torch.full_like(y, 10)])
    x = x_T
    with torch.no_grad():
        for i in range(steps - 1, -1, -1):
            a_t, a_prev = ab[taus[i] + 1], ab[(taus[i - 1] if i else -1) + 1]
            t = torch.full((2 * B,), taus[i], dtype=torch.long, device=x.device)
            e_c, e_u = model(torch.cat([x, x]), t, y=y_in).chunk(2)
            eps = (1.0 + w) * e_c - w * e_u
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
            x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x


class TimedModel:
    """The model, with the wall time spent inside its calls added up (attributes pass through)."""

    def __init__(self, model, device):
        self.model, self.device, self.seconds = model, device, 0.0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.model(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def sync_debug_check(device):
    """DDPM and DDIM with CFG and with classifier guidance under ``torch.cuda.set_sync_debug_mode("warn")``: the
    host-device syncs of a short and a long run are counted; the boundary (label checks, the coefficient tables'
    one copy to the device) syncs a fixed number of times, so any difference is a sync inside the steps."""
    import warnings

    cond, sch = pretrained.load("digits-cond", device=device)
    uncond, _ = pretrained.load("digits-uncond", device=device)
    clf, _ = pretrained.load("digits-noisy-classifier", device=device)
    y = torch.arange(64, device=device) % 10
    results = {}

    def run(model, guid, sampler, n):
        kw = dict(y=y, guidance=guid, progress=False, device=device,
                  generator=torch.Generator(device=device).manual_seed(0))
        if sampler == "ddim":
            return ddim_sample(model, sch, (64, 1, 8, 8), steps=n, **kw)
        short = sch if n == sch.T else type(sch)(sch.betas[:n])
        return ddpm_sample(model, short, (64, 1, 8, 8), **kw)

    def syncs(*a):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                t0 = time.perf_counter()
                run(*a)
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught), dt

    for name, model, guid in (("cfg", cond, ClassifierFreeGuidance(W)), ("cfg-interval", cond,
                              ClassifierFreeGuidance(W, interval=(0, 300))), ("classifier", uncond,
                              ClassifierGuidance(clf, 2.0))):
        for sampler, (few, many) in (("ddim", (10, 50)), ("ddpm", (100, 1000))):
            run(model, guid, sampler, few)                    # warm-up (allocator, kernels)
            (n_few, _), (n_many, dt) = syncs(model, guid, sampler, few), syncs(model, guid, sampler, many)
            per_step = (n_many - n_few) / (many - few)
            results[f"{sampler}-{name}"] = {"syncs_short": n_few, "syncs_long": n_many, "per_step": per_step,
                                            "seconds_long": round(dt, 3)}
            print(f"sync-debug {sampler} {name}: {n_few} syncs in {few} steps, {n_many} in {many} "
                  f"({per_step:g} per step); {many} steps in {dt:.2f} s", flush=True)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps, batch = args.steps, args.batch
    out = {"device": str(device), "threads": args.threads, "steps": steps, "w": W, "batch": batch}
    if device.type == "cuda":
        out["sync_debug"] = sync_debug_check(device)
    net, schedule = pretrained.load("digits-cond", device=device)
    model = TimedModel(net, device)
    y = (torch.arange(batch) % 10).to(device)
    x_T = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
    guidance = ClassifierFreeGuidance(W)

    def sampler(n=steps):
        return ddim_sample(model, schedule, None, x_T=x_T, steps=n, y=y, guidance=guidance, progress=False)

    def bare(n=steps):
        return bare_ddim_cfg(model, schedule, x_T, y, steps=n)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        model.seconds = 0.0
        t0 = time.perf_counter()
        res = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        return dt, dt - model.seconds, res

    timed(lambda: sampler(3)), timed(lambda: bare(3))          # warm-up (short runs)
    ts, tb, os_, ob, outs = [], [], [], [], {}
    for r in range(args.repeats):                             # interleaved, alternating which goes first
        pairs = [(sampler, ts, os_, "s"), (bare, tb, ob, "b")]
        for fn, acc, outside, key in (pairs if r % 2 == 0 else pairs[::-1]):
            dt, off, res = timed(fn)
            acc.append(dt)
            outside.append(off / (dt - off))
            outs[key] = res
    med = statistics.median
    out.update({"ddim_sample_s": med(ts), "bare_loop_s": med(tb), "ratio": med(ts) / med(tb),
                "outside_network_sampler": med(os_), "outside_network_bare": med(ob),
                "max_abs_diff": float((outs["s"] - outs["b"]).abs().max()),
                "ddim_sample_all_s": [round(t, 4) for t in ts], "bare_loop_all_s": [round(t, 4) for t in tb]})
    print(f"overhead: ddim_sample {out['ddim_sample_s']:.3f} s, bare loop {out['bare_loop_s']:.3f} s, "
          f"ratio {out['ratio']:.4f} (median of {args.repeats}; max |diff| {out['max_abs_diff']:.1e}); time outside "
          f"the network calls, as a fraction of the network time: sampler {100 * out['outside_network_sampler']:.2f} %"
          f", bare loop {100 * out['outside_network_bare']:.2f} % — on {device}, {args.threads} threads, "
          f"batch {batch}, {steps} steps")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
