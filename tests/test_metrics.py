"""The judgement layer: Fréchet distance against closed forms, the digits judge's accuracy, and the behaviour of
the accuracy and diversity measures on real and degenerate sets."""
import math

import pytest
import torch

from diffusion_lab import metrics
from diffusion_lab.data import load_digits




@pytest.fixture(scope="module")
def judge():
    return metrics.get_judge()


@pytest.fixture(scope="module")
def test_split():
    return load_digits("test")


# ----------------------------------------------------------------------------- Fréchet distance
def test_frechet_of_a_set_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    for seed in range(5):
        f = torch.randn(500, 16, generator=g) @ torch.randn(16, 16, generator=g) * 10   # correlated, ill-conditioned
        assert metrics.frechet_distance(f, f) < 1e-9 * float(f.var(0).sum())


def test_frechet_gaussians_closed_forms():
    mu = torch.tensor([1.0, -2.0, 0.5])
    assert metrics.frechet_distance_gaussians(torch.zeros(3), torch.eye(3), mu, torch.eye(3)) == pytest.approx(5.25)
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 1.0])
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum())                  # commuting covariances
    assert metrics.frechet_distance_gaussians(torch.zeros(3), torch.diag(a), torch.zeros(3), torch.diag(b)) == \
        pytest.approx(expected, rel=1e-10)
    # non-commuting: the symmetric form agrees with the definition via a general matrix square root
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    s1, s2 = A @ A.T + 0.1 * torch.eye(5, dtype=torch.float64), B @ B.T + 0.1 * torch.eye(5, dtype=torch.float64)
    ev = torch.linalg.eigvals(s1 @ s2)                                    # real, positive
    ref = float(torch.trace(s1 + s2) - 2 * ev.real.clamp(min=0).sqrt().sum())
    assert metrics.frechet_distance_gaussians(torch.zeros(5), s1, torch.zeros(5), s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_of_samples_matches_mean_shift():
    g = torch.Generator().manual_seed(2)
    mu = torch.tensor([0.5, -1.0, 1.0, 0.0])
    a = torch.randn(20000, 4, generator=g)
    b = torch.randn(20000, 4, generator=g) + mu
    assert metrics.frechet_distance(a, b) == pytest.approx(float(mu.pow(2).sum()), abs=0.03)


def test_frechet_validates_input():
    with pytest.raises(ValueError, match="feature dimensions"):
        metrics.frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance(torch.randn(1, 3), torch.randn(10, 3))


# ----------------------------------------------------------------------------- the judge
def test_judge_is_accurate_on_held_out_digits(judge, test_split):
    acc = judge.accuracy(*test_split)
    print(f"judge test accuracy {acc:.4f}")
    assert acc >= 0.97
    assert metrics.get_judge() is judge                                  # trained once per process
    assert judge.features(test_split[0][:5]).shape == (5, metrics.DigitsJudge.feature_dim)


def test_conditional_accuracy_of_real_data_is_judge_accuracy(judge, test_split):
    x, y = test_split
    assert metrics.conditional_accuracy(x, y, judge) == judge.accuracy(x, y)
    wrong = (y + 1) % 10
    assert metrics.conditional_accuracy(x, wrong, judge) < 0.05


def test_real_data_frechet_baseline_is_small(judge, test_split):
    base = metrics.real_frechet_baseline(judge)
    noise = torch.rand(360, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = metrics.frechet_distance_to_data(noise, judge)
    print(f"real train-vs-test Fréchet {base:.3f}; uniform noise {bad:.1f}")
    assert 0 < base < 0.05 * bad
    assert metrics.frechet_distance_to_data(test_split[0], judge) == pytest.approx(base)


def test_diversity_of_collapse_is_far_below_real(judge, test_split):
    x, y = test_split
    real = metrics.diversity(x, judge)
    collapsed = metrics.diversity(x[:1].repeat(200, 1, 1, 1), judge)
    assert real["pairwise_ratio"] > 0.9 and real["mode_coverage"] == 1.0 and real["class_entropy"] > 0.99
    assert collapsed["pairwise_ratio"] < 1e-6 and collapsed["mode_coverage"] == pytest.approx(0.1)
    assert collapsed["class_entropy"] == 0.0
    per_class = metrics.diversity(x, judge, labels=y)
    assert per_class["pairwise_ratio"] > 0.9
    one_per_class = torch.cat([x[y == k][:1].repeat(20, 1, 1, 1) for k in range(10)])
    collapsed_cond = metrics.diversity(one_per_class, judge, labels=torch.arange(10).repeat_interleave(20))
    assert collapsed_cond["pairwise_ratio"] < 1e-6 and collapsed_cond["mode_coverage"] >= 0.9
    assert metrics.mode_coverage(x, judge) == 1.0


def test_judge_weights_round_trip_through_safetensors(judge, test_split, tmp_path):
    path = metrics.save_judge(judge, tmp_path / metrics.JUDGE_WEIGHTS_NAME)
    loaded = metrics.load_judge(path)
    x = test_split[0][:50]
    torch.testing.assert_close(loaded.logits(x), judge.logits(x))
    again = metrics.judge_from_state_dict(judge.state_dict())
    torch.testing.assert_close(again.features(x), judge.features(x))
    assert metrics.get_judge(path).logits(x).shape == (50, 10)


def test_judge_training_is_deterministic():
    a = metrics.train_judge(epochs=1, seed=3)
    b = metrics.train_judge(epochs=1, seed=3)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def test_judge_rejects_wrong_shapes(judge):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        judge.features(torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="labels"):
        judge.accuracy(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    assert math.isclose(float(metrics.class_histogram(torch.zeros(7, 1, 8, 8) - 1, judge).sum()), 1.0)


# ----------------------------------------------------------------------------- paired bootstrap (margins)
def test_paired_bootstrap_points_are_the_metrics_and_spreads_are_sane(judge, test_split):
    """The point values are the package's three measures; a set against itself differs by exactly 0; the accuracy's
    bootstrap spread is the binomial standard error; a degraded set is separated from the real one by many SEs."""
    x, y = test_split
    idx = torch.cat([torch.nonzero(y == k)[:20, 0] for k in range(10)])
    x, y = x[idx], y[idx]
    noisy = (x + 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    ps = metrics.paired_bootstrap({"real": x, "noisy": noisy}, y, judge, n_boot=100, seed=1)
    for key, imgs in (("real", x), ("noisy", noisy)):
        assert ps[key]["acc"] == pytest.approx(metrics.conditional_accuracy(imgs, y, judge), abs=1e-12)
        assert ps[key]["fd"] == pytest.approx(metrics.frechet_distance_to_data(imgs, judge), rel=1e-9)
        assert ps[key]["div"] == pytest.approx(metrics.diversity(imgs, judge, labels=y)["pairwise_ratio"], rel=1e-9)
    p = ps["noisy"]["acc"]
    assert ps.se("acc", "noisy") == pytest.approx(math.sqrt(p * (1 - p) / len(y)), rel=0.35)
    assert ps.se("fd", "real", "real") == 0 and ps.diff("div", "noisy", "noisy") == 0
    assert ps.draws("fd", "noisy").std().item() == pytest.approx(ps.se("fd", "noisy"))
    assert ps.z("fd", "noisy", "real") > 5 and ps.z("acc", "real", "noisy") > 5


def test_paired_bootstrap_refuses_bad_input(judge, test_split):
    x, y = test_split
    with pytest.raises(ValueError, match="labels has"):
        metrics.paired_bootstrap({"a": x[:10]}, y[:12], judge)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.paired_bootstrap({"a": x[:3]}, torch.tensor([0, 1, 1]), judge)
    with pytest.raises(ValueError, match="n_boot"):
        metrics.paired_bootstrap({"a": x[:4]}, torch.tensor([0, 0, 1, 1]), judge, n_boot=1)
    ps = metrics.paired_bootstrap({"a": x[:4]}, torch.tensor([0, 0, 1, 1]), judge, n_boot=3)
    with pytest.raises(ValueError, match="stat"):
        ps.se("fid", "a")
    with pytest.raises(KeyError, match="no sample set"):
        ps.se("fd", "b")
