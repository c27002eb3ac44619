"""Networks: shapes, zero-initialised output, conditioning with a null label, clear errors at the boundary."""
import json

import pytest
import torch

from diffusion_lab.models import (MLPDenoiser, NoisyClassifier, UNet, UNetConfig, build_model, model_config,
                                  model_from_config, timestep_embedding)




def small_unet(**kw):
    cfg = dict(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,))
    cfg.update(kw)
    return UNet(**cfg)


def randomize_output(model):
    """Give the zero-initialised layers random weights so the output depends on the input."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_unet_shapes_8_and_32():
    m = small_unet()
    assert m(torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 999])).shape == (3, 1, 8, 8)
    m32 = UNet(in_channels=3, image_size=32, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
               attention_resolutions=(16,), num_heads=2)
    assert m32(torch.randn(2, 3, 32, 32), torch.tensor([1, 2])).shape == (2, 3, 32, 32)


def test_mlp_and_classifier_shapes():
    assert MLPDenoiser(data_dim=2)(torch.randn(5, 2), torch.arange(5)).shape == (5, 2)
    assert MLPDenoiser(data_dim=7, num_classes=3)(torch.randn(4, 7), 3, torch.tensor([0, 1, 2, 3])).shape == (4, 7)
    clf = NoisyClassifier(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
    assert clf(torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 100, 999])).shape == (4, 10)


def test_output_is_zero_at_init():
    x, t = torch.randn(4, 1, 8, 8), torch.randint(0, 1000, (4,))
    assert torch.equal(small_unet()(x, t), torch.zeros_like(x))
    assert torch.equal(small_unet(num_classes=10)(x, t, torch.tensor([0, 3, 9, 10])), torch.zeros_like(x))
    z = torch.randn(6, 2)
    assert torch.equal(MLPDenoiser()(z, 10), torch.zeros_like(z))


def test_null_label_and_conditioning():
    m = randomize_output(small_unet(num_classes=10)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    null = torch.full((2,), 10)
    assert torch.equal(m(x, t), m(x, t, null))  # y=None is the null label ∅
    assert not torch.allclose(m(x, t, torch.tensor([1, 2])), m(x, t, null))
    mlp = randomize_output(MLPDenoiser(num_classes=4)).eval()
    z = torch.randn(3, 2)
    assert torch.equal(mlp(z, 5), mlp(z, 5, torch.full((3,), 4)))


def test_timestep_embedding_convention():
    e = timestep_embedding(torch.tensor([0, 7]), 8)
    assert e.shape == (2, 8) and torch.allclose(e[0, :4], torch.ones(4)) and torch.allclose(e[0, 4:], torch.zeros(4))
    assert torch.allclose(e[1, 0], torch.cos(torch.tensor(7.0))) and torch.allclose(e[1, 4], torch.sin(torch.tensor(7.0)))


@pytest.mark.parametrize("call, err, match", [
    (lambda m: m(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])), ValueError, "1 input channel"),
    (lambda m: m(torch.randn(2, 1, 7, 8), torch.tensor([1, 2])), ValueError, "divisible by the downsampling"),
    (lambda m: m(torch.randn(2, 1, 8), torch.tensor([1, 2])), ValueError, r"\(B, C, H, W\)"),
    (lambda m: m(torch.randn(2, 1, 8, 8), torch.tensor([1.0, 2.0])), TypeError, "integer step"),
    (lambda m: m(torch.randn(2, 1, 8, 8), 0.5), TypeError, "int or an integer"),
    (lambda m: m(torch.randn(2, 1, 8, 8), torch.tensor([-1, 2])), ValueError, "non-negative"),
    (lambda m: m(torch.randn(2, 1, 8, 8), -3), ValueError, "non-negative"),
    (lambda m: m(torch.randn(2, 1, 8, 8), torch.tensor([1, 2, 3])), ValueError, r"shape \(B,\)"),
    (lambda m: m(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1])), ValueError, "unconditional"),
])
def test_unet_rejects_bad_inputs(call, err, match):
    with pytest.raises(err, match=match):
        call(small_unet())


@pytest.mark.parametrize("labels, err, match", [
    (torch.tensor([0, 11]), ValueError, r"\[0, 10\].*null label"),
    (torch.tensor([-1, 3]), ValueError, r"\[0, 10\]"),
    (torch.tensor([0.0, 1.0]), TypeError, "integer class labels"),
    (torch.tensor([0, 1, 2]), ValueError, r"shape \(B,\)"),
])
def test_conditional_rejects_bad_labels(labels, err, match):
    with pytest.raises(err, match=match):
        small_unet(num_classes=10)(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), labels)
    with pytest.raises(err, match=match):
        MLPDenoiser(num_classes=10)(torch.randn(2, 2), torch.tensor([1, 2]), labels)


def test_mlp_and_classifier_reject_bad_inputs():
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        MLPDenoiser()(torch.randn(3, 3), 1)
    with pytest.raises(ValueError, match="unconditional"):
        MLPDenoiser()(torch.randn(3, 2), 1, torch.tensor([0, 0, 0]))
    clf = NoisyClassifier(base_channels=32, num_res_blocks=1, num_classes=10)
    with pytest.raises(ValueError, match="input channel"):
        clf(torch.randn(2, 3, 8, 8), 1)
    with pytest.raises(TypeError):
        clf(torch.randn(2, 1, 8, 8), torch.tensor([0.5, 1.0]))


def test_bad_configs():
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(image_size=10, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="num_classes"):
        UNetConfig(num_classes=0)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("transformer")
    with pytest.raises(ValueError, match="unknown UNetConfig field"):
        build_model("unet", base_chanels=32)


@pytest.mark.parametrize("model", [
    lambda: small_unet(num_classes=10, dropout=0.1),
    lambda: MLPDenoiser(hidden_dim=64, num_classes=3),
    lambda: NoisyClassifier(base_channels=32, num_res_blocks=1, num_classes=10),
])
def test_registry_round_trip_through_json(model):
    m = model()
    cfg = json.loads(json.dumps(model_config(m)))
    m2 = model_from_config(cfg)
    assert type(m2) is type(m) and m2.config == m.config
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in m2.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_is_finite(dtype):
    m = randomize_output(small_unet(num_classes=10))
    x = torch.randn(2, 1, 8, 8) * 50  # large activations stress the attention softmax
    with torch.autocast("cpu", dtype=dtype):
        out = m(x, torch.tensor([3, 900]), torch.tensor([1, 10]))
    assert torch.isfinite(out.float()).all()


def test_gradients_reach_every_parameter():
    m = randomize_output(small_unet(num_classes=10))
    m(torch.randn(2, 1, 8, 8), torch.tensor([3, 9]), torch.tensor([1, 10])).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.named_parameters()
               if not n.startswith("label_embed")), "some UNet parameters received no gradient"
