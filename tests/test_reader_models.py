"""The reader's model folder: chapter 5 saves, chapters 6–8 load it or fall back to the shipped weights."""
import pytest
import torch

from diffusion_lab import pretrained, reader_models
from diffusion_lab.data import load_digits
from diffusion_lab.models import build_model
from diffusion_lab.schedules import linear_schedule
from diffusion_lab.train import train


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(reader_models.ENV_VAR, str(tmp_path))
    return tmp_path


def test_home_follows_the_environment(home):
    assert reader_models.home() == home
    assert reader_models.reader_model_path("digits-cond") == home / "models" / "digits-cond.json"


def test_falls_back_to_the_shipped_model_with_a_note(home, capsys):
    loaded = reader_models.load_reader_or_shipped("digits-cond")
    model, source = loaded.model, loaded.source
    assert source == "shipped"
    assert "using the shipped checkpoint" in capsys.readouterr().out
    shipped, _ = pretrained.load("digits-cond")
    for a, b in zip(model.state_dict().values(), shipped.state_dict().values()):
        assert torch.equal(a, b)


def test_saved_model_is_loaded_back_with_its_ema_weights(home, capsys):
    x, y = load_digits("train")
    schedule = linear_schedule(T=50)
    net = build_model("unet", image_size=8, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                      attention_resolutions=(), num_classes=10, num_groups=4, time_embed_dim=16)
    res = train(net, schedule, (x[:64], y[:64]), steps=3, batch_size=16, warmup=1, ema_decay=0.5,
                label_dropout=0.1, device="cpu", progress=False)
    path = reader_models.save_reader_model("mine", res, schedule)
    assert path.exists() and reader_models.has_reader_model("mine")
    loaded = reader_models.load_reader_or_shipped("mine")
    model, sched, source = loaded.model, loaded.schedule, loaded.source
    assert source == "reader" and sched.T == 50
    assert "trained in chapter 5" in capsys.readouterr().out
    for a, b in zip(model.state_dict().values(), res.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in model.parameters())


def test_unreadable_reader_model_is_reported_not_hidden(home, capsys):
    path = reader_models.reader_model_path("digits-cond")
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    path.with_suffix(".safetensors").write_bytes(b"junk")
    source = reader_models.load_reader_or_shipped("digits-cond").source
    assert source == "shipped"
    assert "could not be read" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", 3])
def test_bad_names_are_refused(home, bad):
    with pytest.raises(ValueError, match="plain file stem"):
        reader_models.reader_model_path(bad)


def test_save_needs_a_train_result(home):
    with pytest.raises(TypeError, match="TrainResult"):
        reader_models.save_reader_model("x", object(), linear_schedule(T=10))
