"""What the training loop feeds the network, observed with a recording hook — not compared with its own output.

Each fact is checked against an independent statistic: the label-dropout rate against a binomial bound, the
timesteps against a χ² bound for the uniform law on {0, …, T−1}, x_t against q(x_t | x_0) (eq. 2.4) through the
noise it implies, and the loss's target against that same noise (eq. 4.9: the target is the ε that made x_t).
"""
import math

import pytest
import torch

from diffusion_lab.models import MLPDenoiser, NoisyClassifier
from diffusion_lab.schedules import linear_schedule
from diffusion_lab.train import train, train_classifier

T = 20
SCHEDULE = linear_schedule(T, beta_start=1e-3, beta_end=0.3)   # short and steep: ᾱ differs a lot between steps


class Recorder:
    """A forward pre-hook + hook pair that keeps every (x_t, t, y) the network is called with and its output."""

    def __init__(self, net):
        self.x, self.t, self.y, self.out = [], [], [], []
        net.register_forward_pre_hook(self._pre, with_kwargs=True)
        net.register_forward_hook(self._post)

    def _pre(self, module, args, kwargs):
        x, t = args[0], args[1]
        y = args[2] if len(args) > 2 else kwargs.get("y")
        self.x.append(x.detach().clone())
        self.t.append(t.detach().clone())
        self.y.append(None if y is None else y.detach().clone())

    def _post(self, module, args, output):
        self.out.append(output.detach().clone())

    def cat(self, name):
        return torch.cat(getattr(self, name))


def implied_noise(x_t, t, x0):
    """ε such that x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε (eq. 2.4), per item."""
    ab = SCHEDULE.alpha_bars[t].to(x_t.dtype)
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    return (x_t - ab.sqrt().reshape(shape) * x0) / (1 - ab).sqrt().reshape(shape)


def chi2_upper(df, z=4.0):
    """A generous upper bound for a χ²(df) statistic: mean + z standard deviations."""
    return df + z * math.sqrt(2 * df)


@pytest.fixture(scope="module")
def conditional_run():
    """500 steps of batch 64 on one data point x0 = (0.7, −0.4) with label 3, label dropout 0.15."""
    torch.manual_seed(0)
    net = MLPDenoiser(hidden_dim=16, num_blocks=1, num_classes=10)
    rec = Recorder(net)
    x0 = torch.tensor([[0.7, -0.4]])
    res = train(net, SCHEDULE, (x0, torch.tensor([3])), steps=500, batch_size=64, lr=1e-3, warmup=1,
                ema_decay=None, label_dropout=0.15, device="cpu", progress=False, log_every=1, seed=5)
    return rec, res, x0


def test_dropped_labels_are_the_null_label_at_the_configured_rate(conditional_run):
    rec, _, _ = conditional_run
    y = rec.cat("y")
    assert set(y.unique().tolist()) == {3, 10}, "a label is either the true one (3) or the null label num_classes=10"
    n, p = y.numel(), 0.15
    rate = (y == 10).double().mean().item()
    bound = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) < bound, f"dropout rate {rate:.4f}, expected {p} ± {bound:.4f} (n = {n})"


def test_timesteps_cover_every_code_index_uniformly(conditional_run):
    rec, _, _ = conditional_run
    t = rec.cat("t")
    assert t.dtype == torch.long and int(t.min()) == 0 and int(t.max()) == T - 1
    counts = torch.bincount(t, minlength=T).double()
    expected = t.numel() / T
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < chi2_upper(T - 1), f"χ² = {chi2:.1f} over {T} bins (df {T - 1}): t is not uniform on 0…{T - 1}"


def test_x_t_is_q_sample_of_the_data_point_at_the_t_given(conditional_run):
    """With one data point, ε implied by (x_t, t) must be N(0, I) in every t-bin: a wrong ᾱ (off-by-one t, ᾱ_prev,
    a clean x0, a missing √) makes the per-t variance differ from 1 (the steep schedule makes neighbours differ)."""
    rec, _, x0 = conditional_run
    eps = implied_noise(rec.cat("x"), rec.cat("t"), x0)
    t = rec.cat("t")
    for k in range(T):
        e = eps[t == k]
        n = e.numel()
        var_z = (e.var().item() - 1) / math.sqrt(2 / n)
        mean_z = e.mean().item() / math.sqrt(1 / n)
        assert abs(var_z) < 5 and abs(mean_z) < 5, f"code t={k}: implied ε has mean z {mean_z:.1f}, var z {var_z:.1f}"


def test_the_loss_target_is_the_noise_that_made_x_t(conditional_run):
    """loss_i = mean‖ε − ε_θ(x_t, t)‖² with ε the very noise inside x_t (eq. 4.9), not a fresh draw."""
    rec, res, x0 = conditional_run
    assert len(rec.x) == len(res.losses) == 500
    worst = 0.0
    for i in range(0, 500, 25):
        eps = implied_noise(rec.x[i], rec.t[i], x0)
        expect = ((eps - rec.out[i]) ** 2).mean().item()
        worst = max(worst, abs(expect - res.losses[i]) / expect)
    assert worst < 1e-4, f"the reported loss differs from ‖ε − ε_θ‖² by a relative {worst:.2e}"


def test_unconditional_model_never_sees_labels():
    torch.manual_seed(0)
    net = MLPDenoiser(hidden_dim=16, num_blocks=1)
    rec = Recorder(net)
    train(net, SCHEDULE, (torch.zeros(4, 2), torch.arange(4)), steps=3, batch_size=8, warmup=1, device="cpu",
          progress=False)
    assert all(y is None for y in rec.y)


def test_noise_aware_classifier_is_trained_on_noised_inputs_at_the_t_it_is_told():
    """x_0 = 0 everywhere, so x_t = √(1−ᾱ_t) ε: x_t / √(1−ᾱ_t) must be N(0, 1) per t-bin (a clean x_0 would be 0;
    a classifier told t while fed x_{t+1} would show variance ≈ (1−ᾱ_{t+1})/(1−ᾱ_t) ≠ 1 at small t)."""
    torch.manual_seed(0)
    clf = NoisyClassifier(base_channels=8, channel_mults=(1,), num_res_blocks=1, num_classes=2, num_groups=4,
                          time_embed_dim=16)
    rec = Recorder(clf)
    x = torch.zeros(2, 1, 8, 8)
    train_classifier(clf, SCHEDULE, x, torch.tensor([0, 1]), steps=60, batch_size=32, warmup=1, device="cpu",
                     progress=False)
    xt, t = rec.cat("x"), rec.cat("t")
    assert xt.abs().max() > 0, "the classifier saw clean x_0"
    z = implied_noise(xt, t, torch.zeros(1, 1, 8, 8))
    for k in range(T):
        e = z[t == k]
        if e.numel() < 200:
            continue
        var_z = (e.var().item() - 1) / math.sqrt(2 / e.numel())
        assert abs(var_z) < 6, f"code t={k}: classifier input variance {e.var().item():.3f}, expected 1"


def test_training_steps_run_with_value_checks_off_and_bad_labels_fail_up_front():
    """The loop draws t and the labels itself, so its steps skip the per-call value checks (each would read t back
    to the host every step on a GPU); the data's labels are checked once, before the first step, instead."""
    from diffusion_lab import checks

    seen = []
    net = MLPDenoiser(hidden_dim=8, num_blocks=1, num_classes=3)
    net.register_forward_pre_hook(lambda module, args: seen.append(checks.value_checks_enabled()))
    train(net, SCHEDULE, (torch.zeros(4, 2), torch.tensor([0, 1, 2, 0])), steps=2, batch_size=4, warmup=1,
          device="cpu", progress=False)
    assert seen == [False, False]
    assert checks.value_checks_enabled(), "the checks are back on after training"
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\], got \[0, 3\]"):
        train(MLPDenoiser(hidden_dim=8, num_blocks=1, num_classes=3), SCHEDULE,
              (torch.zeros(4, 2), torch.tensor([0, 1, 3, 0])), steps=1, batch_size=4, device="cpu", progress=False)
