"""plotting.unet_blocks/draw_unet describe the network faithfully; image_grid lays out a batch."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from diffusion_lab import plotting  # noqa: E402
from diffusion_lab.models import MLPDenoiser, UNet  # noqa: E402


@pytest.mark.parametrize("kw", [dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, num_classes=10),
                                dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2, image_size=16,
                                     attention_resolutions=(8,))])
def test_blocks_cover_every_parameter_and_skips_match_channels(kw):
    net = UNet(**kw)
    blocks = plotting.unet_blocks(net)
    assert sum(b["params"] for b in blocks) == plotting.count_parameters(net)
    downs = [b for b in blocks if b["path"] == "down"]
    ups = [b for b in blocks if b["path"] == "up"]
    prev = {b["name"]: b for b in blocks}
    order = [b for b in blocks if b["path"] in ("down", "middle", "up")]
    for i, b in enumerate(order):
        if b["path"] == "up":   # input = previous block's output + the skip's channels
            assert b["in_ch"] == order[i - 1]["out_ch"] + downs[b["skip_from"]]["out_ch"]
            assert b["size"] in (downs[b["skip_from"]]["size"], 2 * downs[b["skip_from"]]["size"])
    assert sorted(b["skip_from"] for b in ups) == list(range(len(downs)))
    assert ("label_embed" in prev) == (kw.get("num_classes") is not None)
    assert net.training  # left as it was


def test_draw_unet_and_image_grid_draw_something():
    net = UNet(base_channels=16, channel_mults=(1, 2), num_res_blocks=1)
    ax = plotting.draw_unet(net)
    assert len(ax.patches) == len([b for b in plotting.unet_blocks(net) if b["path"] != "embed"])
    fig, ax2 = plt.subplots()
    plotting.image_grid(ax2, torch.zeros(6, 1, 8, 8), nrow=3, title="x")
    assert ax2.images[0].get_array().shape == (2 * 9 + 1, 3 * 9 + 1)
    plt.close("all")


def test_rejects_other_networks():
    with pytest.raises(TypeError, match="UNet"):
        plotting.unet_blocks(MLPDenoiser())
