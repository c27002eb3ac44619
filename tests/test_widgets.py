"""Kernel-free widgets: a Play + SelectionSlider + Stack tied together with jslink, and PNG helpers."""
import io

import ipywidgets as W
import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mimage  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from ipywidgets.embed import embed_data  # noqa: E402
from ipywidgets.widgets import widget as _widget_module  # noqa: E402
from ipywidgets.widgets.widget_link import Link  # noqa: E402

from diffusion_lab.widgets import TRACK_MIN_PX, array_to_png, png_bytes, render_frames, scrubber  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    return mimage.imread(io.BytesIO(png))            # float RGBA in [0, 1], shape (H, W, 4)


@pytest.fixture(scope="module")
def frames():
    return [array_to_png(np.full((4, 4), v, dtype=np.float32)) for v in (-1.0, 0.0, 1.0)]


def _links_from(widget):
    """The ipywidgets Link objects whose source is ``widget`` (jslink keeps no reference in the box)."""
    return [w for w in list(_widget_module._instances.values())
            if isinstance(w, Link) and w.source[0] is widget]


# ----------------------------------------------------------------------------- scrubber
def test_scrubber_structure(frames):
    labels = ["t=1", "t=500", "t=1000"]
    box = scrubber(frames, labels, description="step", interval_ms=250)
    assert isinstance(box, W.VBox)
    caption, row, stack = box.children
    play, slider = row.children
    # the caption on its own line, never wrapped; the slider fills the row, its track at least TRACK_MIN_PX
    assert isinstance(caption, W.HTML) and "step" in caption.value and "nowrap" in caption.value
    assert slider.layout.flex == "1 1 auto" and int(slider.layout.min_width[:-2]) >= TRACK_MIN_PX
    assert (box.play, box.slider, box.stack) == (play, slider, stack)
    assert isinstance(play, W.Play) and isinstance(slider, W.SelectionSlider) and isinstance(stack, W.Stack)
    # one Image per frame, in order, holding exactly the PNG bytes
    assert len(stack.children) == 3
    for img, f in zip(stack.children, frames):
        assert isinstance(img, W.Image) and img.format == "png" and img.value == f
    assert stack.selected_index == 0
    assert slider.options == tuple(labels) and slider.index == 0
    # MathJax 3 on the book's pages breaks any widget with a description (see diffusion_lab.widgets): none has one
    assert all(getattr(w, "description", "") == "" for w in (play, slider, stack, *stack.children))
    assert (play.min, play.max, play.step, play.value, play.interval) == (0, 2, 1, 0, 250)


def test_scrubber_jslinks_play_to_slider_to_stack(frames):
    box = scrubber(frames)
    play_links = _links_from(box.play)
    slider_links = _links_from(box.slider)
    assert len(play_links) == 1 and len(slider_links) == 1
    (p,), (s,) = play_links, slider_links
    assert type(p) is Link and type(s) is Link                # jslink: evaluated by the browser, no kernel
    assert p.source == (box.play, "value") and p.target == (box.slider, "index")
    assert s.source == (box.slider, "index") and s.target == (box.stack, "selected_index")


def test_scrubber_links_are_in_the_saved_widget_state(frames):
    """What a static page gets: the saved manager state holds both LinkModels pointing at our models."""
    box = scrubber(frames)
    state = embed_data(views=[box])["manager_state"]["state"]
    links = {(tuple(v["state"]["source"]), tuple(v["state"]["target"]))
             for v in state.values() if v["model_name"] == "LinkModel"}
    ref = lambda w: "IPY_MODEL_" + w.model_id  # noqa: E731
    assert ((ref(box.play), "value"), (ref(box.slider), "index")) in links
    assert ((ref(box.slider), "index"), (ref(box.stack), "selected_index")) in links


def test_scrubber_default_labels_and_iterables(frames):
    box = scrubber(iter(frames))
    assert box.slider.options == ("0", "1", "2")
    box = scrubber(frames[:1], labels=[250])
    assert box.slider.options == ("250",) and box.play.max == 0


def test_scrubber_rejects_bad_frames(frames):
    with pytest.raises(ValueError, match="at least one frame"):
        scrubber([])
    with pytest.raises(TypeError, match="frame 1 is not PNG bytes; convert figures with png_bytes"):
        scrubber([frames[0], b"GIF89a" + b"\x00" * 20])
    with pytest.raises(TypeError, match="frame 0 is not PNG bytes"):
        scrubber([np.zeros((4, 4))])
    with pytest.raises(TypeError, match="frame 0 is not PNG bytes"):
        scrubber(["not bytes"])


def test_scrubber_rejects_bad_labels(frames):
    with pytest.raises(ValueError, match="got 3 frames but 2 labels; give one label per frame"):
        scrubber(frames, ["a", "b"])
    with pytest.raises(ValueError, match="got 3 frames but 4 labels"):
        scrubber(frames, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="labels must be distinct"):
        scrubber(frames, ["a", "b", "a"])
    with pytest.raises(ValueError, match="labels must be distinct"):
        scrubber(frames, [1, "1", 2])                 # the slider shows str(label): these collide


# ----------------------------------------------------------------------------- array_to_png
def test_array_to_png_grayscale_maps_minus_one_to_black_and_one_to_white():
    a = np.array([[-1.0, 1.0], [0.0, 5.0]], dtype=np.float32)
    img = _decode(array_to_png(a))
    assert img.shape == (2, 2, 4)
    assert np.allclose(img[0, 0, :3], 0) and np.allclose(img[0, 1, :3], 1)
    assert np.allclose(img[1, 0, :3], 0.5, atol=2 / 255)
    assert np.allclose(img[1, 1, :3], 1)                  # above vmax saturates
    # vmin/vmax and torch tensors (with grad) are accepted
    t = torch.tensor([[0.0, 0.5]], requires_grad=True)
    img = _decode(array_to_png(t, vmin=0.0, vmax=1.0))
    assert img.shape == (1, 2, 4) and np.allclose(img[0, 0, :3], 0) and np.allclose(img[0, 1, :3], 0.5, atol=2 / 255)


def test_array_to_png_channel_layouts():
    hw = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert array_to_png(hw[None]) == array_to_png(hw)          # (1, H, W) is (H, W)
    chw = -np.ones((3, 3, 4), dtype=np.float32)
    chw[0] = 1.0                                               # red channel on
    img = _decode(array_to_png(chw))
    assert img.shape == (3, 4, 4)
    assert np.allclose(img[..., 0], 1) and np.allclose(img[..., 1:3], 0)
    hwc = np.moveaxis(chw, 0, -1)
    assert array_to_png(hwc) == array_to_png(chw)              # (H, W, 3) is the same picture
    assert array_to_png(torch.from_numpy(chw)) == array_to_png(chw)


def test_array_to_png_scale_is_nearest_neighbour():
    a = np.array([[-1.0, 1.0], [1.0, -1.0]], dtype=np.float32)
    img = _decode(array_to_png(a, scale=4))
    assert img.shape == (8, 8, 4)
    ref = np.kron((a + 1) / 2, np.ones((4, 4)))
    assert np.allclose(img[..., 0], ref)
    digit = np.random.default_rng(0).uniform(-1, 1, (1, 8, 8)).astype(np.float32)
    assert _decode(array_to_png(digit, scale=3)).shape == (24, 24, 4)


def test_array_to_png_bad_input():
    with pytest.raises(ValueError, match=r"expected an image of shape \(H, W\), \(H, W, 3\) or \(C, H, W\), got \(5,\)"):
        array_to_png(np.zeros(5))
    with pytest.raises(ValueError, match="expected an image of shape"):
        array_to_png(np.zeros((2, 1, 8, 8)))
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=f"scale must be a positive int, got {bad!r}"):
            array_to_png(np.zeros((2, 2)), scale=bad)


# ----------------------------------------------------------------------------- figures
def test_render_frames_gives_one_png_per_value_and_closes_its_figure():
    seen = []

    def draw(fig, v):
        seen.append(v)
        fig.add_subplot().plot([0, 1], [0, v])

    before = plt.get_fignums()
    out = render_frames(draw, [1, 2, 3, 4], figsize=(2, 2), dpi=40)
    assert seen == [1, 2, 3, 4]
    assert len(out) == 4 and all(isinstance(f, bytes) and f[:8] == PNG_MAGIC for f in out)
    assert len(set(out)) == 4                                   # the frames differ
    assert plt.get_fignums() == before
    with pytest.raises(RuntimeError, match="boom"):
        render_frames(lambda fig, v: (_ for _ in ()).throw(RuntimeError("boom")), [1])
    assert plt.get_fignums() == before                          # closed even when draw fails
    box = scrubber(out, [f"t={v}" for v in seen])
    assert len(box.stack.children) == 4


def test_png_bytes_leaves_the_figure_open():
    fig = plt.figure(figsize=(1, 1))
    try:
        b = png_bytes(fig, dpi=30)
        assert b[:8] == PNG_MAGIC and plt.fignum_exists(fig.number)
    finally:
        plt.close(fig)


def test_chooser_links_buttons_to_stack_and_syncs_sliders(frames):
    from diffusion_lab.widgets import chooser

    a, b = scrubber(frames), scrubber(frames)
    box = chooser([a, b], ["x0 = -1", "x0 = 1"], caption="data point")
    assert isinstance(box.buttons, W.ToggleButtons) and box.buttons.options == ("x0 = -1", "x0 = 1")
    assert box.buttons.description == ""                       # MathJax 3 trap, see diffusion_lab.widgets
    (link,) = _links_from(box.buttons)
    assert link.source == (box.buttons, "index") and link.target == (box.stack, "selected_index")
    assert any(l.target == (b.slider, "index") for l in _links_from(a.slider))
    with pytest.raises(ValueError, match="one label per child"):
        chooser([a, b], ["only one"])
    with pytest.raises(ValueError, match="at least one"):
        chooser([], [])
