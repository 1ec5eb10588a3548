"Image restoration end to end: degradation determinism, pair alignment, super-resolution sizes, PSNR/SSIM values, bad inputs, the bench."
import json, subprocess, sys, urllib.error
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from unet_fastai.restoration.degrade import (Crappify, Downscale, JPEG, Grayscale, Holes, Noise, crappify_folder, file_seed)
from unet_fastai.restoration.metrics import psnr, ssim, to_pixels
from unet_fastai.restoration.losses import FeatureLoss, vgg16_bn_features
from unet_fastai.models import create_unet_model, PretrainedWeightsError

ROOT = Path(__file__).resolve().parent.parent
TFMS = [Crappify(48), Downscale(2), Downscale(3, 'bicubic'), JPEG(), Grayscale(), Holes(), Noise(),
        Noise(5) + JPEG((20, 30)) + Holes(n=2, fill='noise')]


def photo(seed=0, size=(40, 52)):
    "A small random-but-smooth RGB image."
    r = np.random.default_rng(seed)
    a = np.kron(r.integers(0, 256, (size[0]//4, size[1]//4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    return Image.fromarray(a)


@pytest.mark.parametrize("tfm", TFMS, ids=repr)
def test_degradation_is_deterministic_under_a_seed(tfm):
    img = photo()
    a, b = np.asarray(tfm(img, seed=3)), np.asarray(tfm(img, seed=np.random.default_rng(3)))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("mode", ['L', 'RGBA', 'P', 'I;16', 'CMYK'])
def test_degradations_take_any_image_mode(mode):
    img = photo().convert(mode) if mode != 'I;16' else Image.fromarray(np.full((20, 24), 3000, np.uint16))
    for tfm in (Crappify(16), JPEG(30), Noise(3)):
        assert tfm(img, 0).mode == 'RGB'
    if mode == 'I;16': assert abs(int(np.asarray(Noise(0)(img)).mean()) - 3000 // 257) <= 1   # scaled, not clipped


def test_crappify_folder_same_bytes_whatever_the_workers(tmp_path):
    (tmp_path/'hr').mkdir()
    for i in range(6): photo(i).save(tmp_path/'hr'/f'{i}.png')
    serial = crappify_folder(tmp_path/'hr', tmp_path/'a', Crappify(24), n_workers=0, progress=False)
    par = crappify_folder(tmp_path/'hr', tmp_path/'b', Crappify(24), n_workers=2, progress=False)
    assert [p.name for p in serial] == [p.name for p in par] == [f'{i}.jpg' for i in range(6)]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(serial, par))
    assert serial[2].read_bytes() == Crappify(24)(Image.open(tmp_path/'hr'/'2.png'), file_seed(0, '2.png')).jpeg
    other = crappify_folder(tmp_path/'hr', tmp_path/'c', Crappify(24), seed=1, progress=False)
    assert any(a.read_bytes() != b.read_bytes() for a, b in zip(serial, other))


def test_crappify_folder_names_an_unreadable_file(tmp_path):
    (tmp_path/'hr').mkdir()
    photo().save(tmp_path/'hr'/'ok.png')
    (tmp_path/'hr'/'broken.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match='broken.png'):
        crappify_folder(tmp_path/'hr', tmp_path/'lr', JPEG(30), progress=False)
    with pytest.raises(ValueError, match='no image files'):
        (tmp_path/'empty').mkdir(); crappify_folder(tmp_path/'empty', tmp_path/'x', progress=False)
    with pytest.raises(ValueError, match='smaller than factor'):
        Downscale(4)(Image.new('RGB', (3, 9)))


def _pairs(tmp_path, n=6, size=(44, 60), k=2):
    from unet_fastai.restoration.data import make_clean_images
    make_clean_images(tmp_path/'hr', n, size)
    crappify_folder(tmp_path/'hr', tmp_path/'lr', Downscale(k), progress=False)
    return tmp_path/'lr', tmp_path/'hr'


@pytest.mark.parametrize("k", [2, 4])
def test_pairs_stay_aligned_through_crops_and_flips(tmp_path, k):
    from fastai.vision.all import set_seed, imagenet_stats
    from unet_fastai.restoration.data import restoration_dls
    lr, hr = _pairs(tmp_path, size=(44, 64) if k == 2 else (88, 128), k=k)
    dls = restoration_dls(lr, hr, size=(8, 12), bs=4, upscale=k, num_workers=0, valid_pct=1/3)
    set_seed(0)
    for _ in range(3):
        xb, yb = dls.train.one_batch()
        assert (xb.shape, yb.shape) == ((4, 3, 8, 12), (4, 3, 8 * k, 12 * k))
        px, py = [(to_pixels(t, imagenet_stats) * 255).round().byte().permute(0, 2, 3, 1).numpy() for t in (xb, yb)]
        for a, b in zip(px, py):
            d = np.abs(np.asarray(Downscale(k)(b)).astype(int) - a)
            assert d[1:-1, 1:-1].max() <= 1                  # the one-pixel border saw outside the crop
        shuffled = np.abs(np.asarray(Downscale(k)(py[0])).astype(int) - px[1]).mean()
        assert shuffled > 3 * np.abs(np.asarray(Downscale(k)(py[0])).astype(int) - px[0]).mean()


def test_restoration_dls_rejects_bad_pairs(tmp_path):
    from unet_fastai.restoration.data import restoration_dls
    lr, hr = _pairs(tmp_path)
    with pytest.raises(ValueError, match='not a ×4 super-resolution pair'): restoration_dls(lr, hr, upscale=4)
    with pytest.raises(ValueError, match='power of 2'): restoration_dls(lr, hr, upscale=0)
    with pytest.raises(ValueError, match='positive'): restoration_dls(lr, hr, size=0, upscale=2)
    (lr/'0003.png').write_bytes(b'garbage')
    with pytest.raises(ValueError, match='0003'): restoration_dls(lr, hr, upscale=2)
    (lr/'0003.png').unlink()
    with pytest.raises(ValueError, match='have no input'): restoration_dls(lr, hr, upscale=2)
    with pytest.raises(FileNotFoundError): restoration_dls(tmp_path/'nope', hr, upscale=2)


@pytest.mark.parametrize("k,shape", [(2, (1, 3, 37, 50)), (4, (2, 3, 64, 40)), (2, (1, 3, 20, 20))])
def test_super_resolution_output_size(k, shape):
    m = create_unet_model('resnet18', 3, 64, pretrained=False, upscale=k, residual=True, y_range=(-3., 3.)).eval()
    with torch.no_grad(): y = m(torch.randn(shape))
    assert y.shape == (shape[0], 3, shape[2] * k, shape[3] * k)


def test_super_resolution_model_saves_and_reloads(tmp_path):
    from unet_fastai.inference.io import save_model, load_model
    from unet_fastai.restoration.learner import restore_image
    m = create_unet_model('resnet18', 3, 64, pretrained=False, upscale=2, residual=True, y_range=(-3., 3.),
                          blur=True, self_attention=True, norm_type='Weight')
    with torch.no_grad(): m.head.final_conv[0].parametrizations.weight.original0.fill_(0.1)   # not the input alone
    m.config['stats'] = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    m2 = load_model(save_model(m, tmp_path/'sr'))
    assert (m2.config['upscale'], m2.config['residual'], m2.upscale, m2.head.residual) == (2, True, 2, True)
    x = torch.randn(1, 3, 30, 41)
    with torch.no_grad(): assert torch.allclose(m.eval()(x), m2(x), atol=1e-5)
    out = restore_image(m2, photo(1))
    assert out.size == (104, 80)


def _ssim_reference(x, y, R=1.):
    "SSIM as scikit-image computes it (Gaussian weights, σ=1.5, population covariance), with scipy, per channel."
    from scipy.ndimage import gaussian_filter
    f = lambda a: gaussian_filter(a, 1.5, truncate=3.5)[5:-5, 5:-5]     # an 11-tap window, valid region
    C1, C2 = (0.01 * R)**2, (0.03 * R)**2
    res = []
    for a, b in zip(x, y):
        mx, my = f(a), f(b)
        vx, vy, cxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
        res.append(((2*mx*my + C1) * (2*cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))).mean())
    return np.mean(res)


def test_psnr_ssim_known_values():
    r = np.random.default_rng(0)
    x = r.random((3, 31, 40)); y = np.clip(x + r.normal(0, 0.05, x.shape), 0, 1)
    tx, ty = torch.tensor(x)[None], torch.tensor(y)[None]
    assert abs(ssim(tx, ty).item() - _ssim_reference(x, y)) < 1e-9
    assert abs(ssim(tx * 255, ty * 255, data_range=255.).item() - _ssim_reference(x * 255, y * 255, 255.)) < 1e-9
    assert abs(ssim(tx.float(), ty.float()).item() - _ssim_reference(x, y)) < 1e-4      # float32
    assert abs(psnr(tx, ty).item() - 10 * np.log10(1 / ((x - y)**2).mean())) < 1e-9
    assert abs(psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5)).item() - 6.0206) < 1e-4
    assert ssim(tx, tx).item() == pytest.approx(1.)


def test_feature_loss_offline_says_use_l1(monkeypatch, tmp_path):
    import torch.hub
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'urlopen', offline)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))          # nothing cached there
    with pytest.raises(PretrainedWeightsError) as e: FeatureLoss()
    msg = str(e.value)
    assert "loss='l1'" in msg and 'vgg16_bn' in msg and 'm_feat' in msg
    from unet_fastai.restoration.learner import restoration_learner
    with pytest.raises(PretrainedWeightsError, match="loss='l1'"): restoration_learner(None, 'resnet18')


def test_bench_quick():
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'restore.py'), '--quick'], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert set(out['tasks']) == {'sr2', 'dejpeg'}
    for t in out['tasks'].values():
        for k in ('psnr_input', 'ssim_input', 'psnr_model', 'ssim_model', 'gain_db', 'train_s'):
            assert np.isfinite(t[k]), (k, t)
        assert 0 < t['ssim_model'] <= 1 and t['psnr_model'] > 15
    assert out['tasks']['sr2']['baseline'] == 'bicubic' and out['settings']['quick']
