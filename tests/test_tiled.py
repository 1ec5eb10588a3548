"`predict_tiled`: argument checks, odd sizes, padding modes, valid-padding models, bounded batches, no fastai needed."
import math, subprocess, sys
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from unet_fastai.inference.tiled import predict_tiled, pad_index
from unet_fastai.models import UNet


def conv_net(n_in=3, n_out=3, seed=0):
    "A same-padding model with a receptive field of 1 px on each side: exact when the tile margin covers it."
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(n_in, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, n_out, 1)).eval()


class Recorder(nn.Module):
    "Wrap a model and record the shape of every batch it is called with."
    def __init__(self, model):
        super().__init__()
        self.model, self.shapes = model, []
    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.model(x)


@pytest.mark.parametrize("kw,match", [
    (dict(tile=0), 'tile'), (dict(tile=-8), 'tile'), (dict(tile=(16, 0)), 'tile'),
    (dict(overlap=1.), 'overlap'), (dict(overlap=-.1), 'overlap'), (dict(overlap=1.5), 'overlap'),
    (dict(blend='max'), 'blend'), (dict(out='logits'), 'out'), (dict(pad_mode='wrap'), 'pad_mode'),
    (dict(bs=0), 'bs'),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        predict_tiled(conv_net(), torch.rand(3, 20, 20), progress=False, **kw)


@pytest.mark.parametrize("img", [torch.rand(2, 3, 20, 20), torch.rand(20), torch.rand(1, 1, 3, 20, 20),
                                 np.zeros((1, 20, 20, 3), np.uint8), np.zeros(20, np.uint8), torch.rand(3, 0, 20)])
def test_bad_image_shapes(img):
    with pytest.raises(ValueError):
        predict_tiled(conv_net(), img, tile=16, progress=False)


def test_bad_image_type_and_model_outputs():
    with pytest.raises(TypeError, match='PIL image'):
        predict_tiled(conv_net(), [[0, 1], [2, 3]], progress=False)
    up = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Upsample(scale_factor=2))
    with pytest.raises(ValueError, match='smaller by the same border'):
        predict_tiled(up, torch.rand(3, 20, 20), tile=16, progress=False)
    odd = nn.Conv2d(3, 2, (2, 2))                       # loses one pixel, not a border on each side
    with pytest.raises(ValueError, match='smaller by the same border'):
        predict_tiled(odd, torch.rand(3, 20, 20), tile=16, progress=False)
    flat = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten())
    with pytest.raises(ValueError, match='expected'):
        predict_tiled(flat, torch.rand(3, 20, 20), tile=16, progress=False)


@pytest.mark.parametrize("pad_mode", ['reflect', 'replicate', 'circular', 'constant'])
def test_non_square_odd_image_matches_one_padded_pass(pad_mode):
    net, x = conv_net(), torch.rand(3, 37, 53)
    m = round(16*.25/2)                                 # the margin, 2 px >= the receptive field
    with torch.no_grad():
        whole = net(F.pad(x[None], [m]*4, mode=pad_mode)).softmax(1)[0, :, m:-m, m:-m]
    p = predict_tiled(net, x, tile=16, overlap=.25, blend='center', pad_mode=pad_mode, bs=3, progress=False)
    assert p.shape == (3, 37, 53) and p.dtype == torch.float32
    assert torch.allclose(p, whole, atol=1e-6)
    g = predict_tiled(net, x, tile=16, overlap=.25, blend='gaussian', pad_mode=pad_mode, progress=False)
    assert (g - whole).abs().max() < 1e-2 and (g - whole).abs().mean() < 1e-3
    lbl = predict_tiled(net, x.numpy().transpose(1, 2, 0), tile=(16, 24), out='labels', progress=False)
    assert lbl.shape == (37, 53) and lbl.dtype == torch.int64


def test_rectangular_tile_and_uint8():
    net = conv_net()
    img = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    a = predict_tiled(net, img, tile=(16, 32), progress=False)
    b = predict_tiled(net, torch.from_numpy(img).permute(2, 0, 1).float() / 255, tile=(16, 32), progress=False)
    assert a.shape == (3, 45, 70) and torch.allclose(a, b, atol=1e-6)


def test_valid_unet_gives_full_size_output():
    torch.manual_seed(0)
    u = UNet(3, 2, base=4, depth=3, padding='valid')
    assert u.out_size(84) == 44
    for size in [(57, 91), (20, 30), (150, 44)]:
        p = predict_tiled(u, torch.rand(3, *size), tile=84, progress=False)
        assert p.shape == (2, *size)
        assert torch.allclose(p.sum(0), torch.ones(size), atol=1e-5)
    assert u.training                                   # the model's mode is restored
    with pytest.raises(ValueError, match='valid_size'):  # a window the model cannot take
        predict_tiled(u, torch.rand(3, 57, 91), tile=85, progress=False)


def test_one_output_channel_is_a_sigmoid():
    net = conv_net(n_out=1)
    x = torch.rand(3, 30, 40)
    p = predict_tiled(net, x, tile=64, progress=False)
    with torch.no_grad(): ref = net(x[None]).sigmoid()[0]
    assert p.shape == (1, 30, 40) and torch.allclose(p, ref, atol=1e-6)
    assert torch.equal(predict_tiled(net, x, tile=64, out='labels', progress=False), (p[0] > .5).long())


@pytest.mark.parametrize("size,tta", [(1024, False), (320, True)])
def test_memory_bounded_by_the_batch(size, tta):
    "A 1024² image: the model only ever sees `bs` windows at once, every window once (4 times with TTA), plus one probe."
    rec = Recorder(conv_net())
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    p = predict_tiled(rec, img, tile=128, overlap=.25, bs=3, tta=tta, progress=False)
    assert p.shape == (3, size, size)
    n_axis = math.ceil((size + 2*16 - 128) / 96) + 1     # margin 16, stride 96
    n_tiles, calls, k = n_axis**2, math.ceil(n_axis**2 / 3), 4 if tta else 1
    probe, shapes = rec.shapes[0], rec.shapes[1:]
    assert probe == (1, 3, 128, 128)
    assert len(shapes) == calls * k
    assert all(s[0] <= 3 and s[1:] == (3, 128, 128) for s in shapes)
    assert sum(s[0] for s in shapes) == n_tiles * k


def test_small_image_is_one_pass_at_its_size():
    "An image smaller than the tile costs two passes at its own size (probe + prediction), never a tile-sized one."
    rec = Recorder(conv_net())
    x = torch.rand(3, 40, 50)
    p = predict_tiled(rec, x, tile=64, progress=False)
    assert rec.shapes == [(1, 3, 40, 50)] * 2
    with torch.no_grad(): assert torch.allclose(p, rec.model(x[None]).softmax(1)[0], atol=1e-6)
    rec = Recorder(conv_net())
    predict_tiled(rec, torch.rand(3, 40, 500), tile=64, bs=8, progress=False)   # thin: windows 40×64
    assert {s[1:] for s in rec.shapes} == {(3, 40, 64)}


def test_windows_stay_on_the_model_grid():
    "With `model.stride` = 8, every window starts on the same 8-px grid of the (mirror-padded) image."
    class Grid(nn.Module):
        stride = 8
        def __init__(self):
            super().__init__()
            self.conv, self.seen = nn.Conv2d(2, 2, 1), []
        def forward(self, x):
            self.seen.append(x.clone())
            return self.conv(x)
    g = Grid()
    H, W = 100, 123
    img = torch.stack([torch.arange(1., H+1)[:, None].expand(H, W), torch.arange(1., W+1)[None].expand(H, W)])
    predict_tiled(g, img, tile=40, overlap=.25, pad_mode='constant', bs=4, progress=False)
    m = round(40*.25/2)                                  # margin 5: windows start at -5 + multiples of 8
    starts = set()
    for x in g.seen[1:]:                                 # skip the probe
        for t in x:
            rows, cols = t[0].amax(1), t[1].amax(0)      # 0 outside the image, index+1 inside
            k, l = int((rows > 0).nonzero()[0]), int((cols > 0).nonzero()[0])
            starts.add((int(rows[k]) - 1 - k, int(cols[l]) - 1 - l))
    assert all((r + m) % 8 == 0 and (c + m) % 8 == 0 for r, c in starts), starts
    rs, cs = sorted({r for r, _ in starts}), sorted({c for _, c in starts})
    assert rs[0] == -m and cs[0] == -m and rs[-1] + 40 >= H + m and cs[-1] + 40 >= W + m
    assert max(b - a for a, b in zip(rs, rs[1:])) <= 40 - 2*m


def test_pad_index_matches_numpy():
    for mode, np_mode in [('reflect', 'reflect'), ('replicate', 'edge'), ('circular', 'wrap')]:
        for n in (1, 2, 5):
            idx = pad_index(torch.arange(-7, n + 7), n, mode).numpy()
            if mode == 'reflect' and n == 1: ref = np.zeros(n + 14, int)
            else: ref = np.pad(np.arange(n), 7, mode=np_mode)
            assert (idx == ref).all(), (mode, n)


def test_core_works_without_fastai():
    "The model code never imports fastai, and `predict_tiled` works where fastai cannot be imported."
    code = ("import sys\n"
            "import unet_fastai.models.classic\n"
            "assert 'fastai' not in sys.modules\n"
            "sys.modules['fastai'] = None\n"                    # any `import fastai...` now fails
            "import torch, torch.nn as nn\n"
            "from unet_fastai.inference.tiled import predict_tiled\n"
            "p = predict_tiled(nn.Conv2d(3, 2, 1), torch.rand(3, 40, 50), tile=32, progress=False)\n"
            "assert p.shape == (2, 40, 50)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_model_cpu_result():
    net = conv_net().cuda()
    x = torch.rand(3, 70, 90)
    p = predict_tiled(net, x, tile=32, progress=False)
    assert p.device.type == 'cpu'
    assert torch.allclose(p, predict_tiled(net.cpu(), x, tile=32, progress=False), atol=1e-5)
