"Robust input handling in the data pipeline: image modes converted where safe and refused otherwise."
import numpy as np
import pytest
from PIL import Image
from unet_fastai.segmentation.data import open_image, OpenMask, camvid_dls
from unet_fastai.segmentation.synth import make_synth_camvid


@pytest.mark.parametrize("mode,make", [
    ("I;16", lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257)),
    ("RGBA", lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]))),
    ("P", lambda a: Image.fromarray(a).convert("P")),
    ("L", lambda a: Image.fromarray(a[..., 0])),
])
def test_modes_converted_to_rgb(mode, make, tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    f = tmp_path/f"x_{mode.replace(';', '')}.png"
    make(a).save(f)
    im = open_image(f)
    assert im.mode == "RGB" and im.size == (10, 12)
    if mode in ("I;16", "L"):          # 16-bit scaled to 8-bit: the gray values survive
        assert np.abs(np.asarray(im)[..., 0].astype(int) - a[..., 0]).max() <= 1


def test_float_image_refused(tmp_path):
    f = tmp_path/"x.tif"
    Image.fromarray(np.random.rand(8, 8).astype(np.float32)).save(f)
    with pytest.raises(ValueError, match=r"x\.tif: unsupported image mode 'F'"):
        open_image(f)


def test_rgb_mask_refused(tmp_path):
    f = tmp_path/"m.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(f)
    with pytest.raises(ValueError, match=r"m\.png: a mask must be a single-channel label image"):
        OpenMask(12, 11)(f)


def test_palette_mask_keeps_its_indices(tmp_path):
    f = tmp_path/"m.png"
    m = Image.frombytes("P", (2, 2), np.array([[0, 3], [11, 5]], np.uint8).tobytes())
    m.putpalette([i for c in range(256) for i in (c, 255 - c, 0)])
    m.save(f)
    assert np.array(OpenMask(12, 11)(f)).tolist() == [[0, 3], [11, 5]]


def test_data_folder_untouched_by_loading(tmp_path):
    p = make_synth_camvid(tmp_path/"c", n_train=4, n_valid=2)
    before = {f: f.read_bytes() for f in p.rglob("*.png")}
    dls = camvid_dls(p, bs=2, num_workers=0)
    dls.one_batch()
    assert {f: f.read_bytes() for f in p.rglob("*.png")} == before
