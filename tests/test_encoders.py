"""The encoder matrix. Every registered encoder builds a U-Net whose output has the input's size, with the encoder's
parameters (and only them) in the frozen groups: checked on the meta device, without allocating or initialising
weights, so the 47 encoders cost seconds. One encoder per family (and a few timm ones) also trains a step and freezes
right, on real weights."""
import importlib.util
from unittest import mock
import pytest, torch, torch.nn as nn
from unet_fastai.models.encoders import encoders, encoder_meta, create_body, PretrainedWeightsError
from unet_fastai.segmentation.synth import make_synth_camvid
from unet_fastai.segmentation.data import camvid_dls
from unet_fastai.learner import unet_learner, UnetSplitter
from unet_fastai.models.unet import create_unet_model

HAS_TIMM = importlib.util.find_spec('timm') is not None
TIMM = ['resnet18d', 'convnext_atto', 'timm:efficientnet_b0', 'regnetx_002', 'mobilenetv3_small_100']
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


@pytest.fixture(scope='module')
def dls(tmp_path_factory):
    d = tmp_path_factory.mktemp('enc')
    return camvid_dls(make_synth_camvid(d/'camvid', n_train=4, n_valid=2, size=(64, 96)), bs=2, num_workers=0)


def check(dls, arch):
    torch.manual_seed(0)
    learn = unet_learner(dls, arch, pretrained=False)
    model = learn.model
    x, y = dls.one_batch()
    out = model(x)
    assert out.shape == (2, 12, 64, 96)
    learn.loss_func(out, y).backward()
    assert all(p.grad is not None for p in model.head.final_conv.parameters())
    assert model.encoder[0].weight.grad is not None if hasattr(model.encoder[0], 'weight') else True
    assert len(learn.opt.param_groups if learn.opt else learn.splitter(model)) >= 2
    learn.freeze()
    for m in model.encoder.modules():
        for p in m.parameters(recurse=False):
            assert p.requires_grad == isinstance(m, NORMS), f"{arch}: {type(m).__name__} requires_grad={p.requires_grad}"
    assert all(p.requires_grad for p in model.head.final_conv.parameters())


# the torchvision encoders the library registers (tests register their own, and timm names register when used)
TORCHVISION = sorted(a for a in encoders if getattr(encoders[a].builder, '__module__', '').startswith('torchvision'))
FAMILY = ['resnet18', 'resnet34', 'vgg11_bn', 'densenet121', 'efficientnet_b0',
          'efficientnet_v2_s', 'convnext_tiny', 'regnet_x_400mf', 'regnet_y_400mf']
_no_init = {f: (lambda t, *a, **k: t) for f in ('normal_', 'kaiming_normal_', 'kaiming_uniform_', 'uniform_', 'zeros_',
                                                  'ones_', 'constant_', 'trunc_normal_')}


def meta_unet(arch):
    "The U-Net on `arch` with meta tensors (shapes only). RegNet builders compute widths with tensors, so they build on the CPU, uninitialised."
    try:
        with torch.device('meta'): return create_unet_model(arch, 12, (64, 96), pretrained=False)
    except NotImplementedError:                                 # "Cannot copy out of meta tensor"
        with mock.patch.multiple(nn.init, **_no_init): return create_unet_model(arch, 12, (64, 96), pretrained=False).to('meta')


def test_family_representatives_are_registered():
    assert set(FAMILY) <= set(encoders)
    name = lambda f: getattr(getattr(f, 'func', f), '__name__', repr(f))
    assert {name(encoders[a].split) for a in TORCHVISION} <= {name(encoders[a].split) for a in FAMILY}  # each split trains


@pytest.mark.parametrize('arch', TORCHVISION)
def test_registered_encoder_structure(arch):
    m = meta_unet(arch)
    with torch.no_grad(): y = m(torch.empty(2, 3, 64, 96, device='meta'))
    assert y.shape == (2, 12, 64, 96)
    with torch.no_grad(): y = m(torch.empty(1, 3, 97, 131, device='meta'))   # odd sides: upsampled maps cut to the skips
    assert y.shape == (1, 12, 97, 131)
    assert len(m.sz_idxs) >= 3 and len(m.decoder.blocks) == len(m.sz_idxs)
    groups = UnetSplitter(encoder_meta(arch).split)(m)
    assert len(groups) >= 2
    frozen = {id(p) for g in groups[:-1] for p in g}
    assert frozen == {id(p) for p in m.encoder.parameters()}
    assert {id(p) for p in groups[-1]} == {id(p) for n, c in m.named_children() if n != 'encoder' for p in c.parameters()}


@pytest.mark.parametrize('arch', FAMILY)
def test_family_encoder_trains(dls, arch): check(dls, arch)


@pytest.mark.skipif(not HAS_TIMM, reason='timm is not installed')
@pytest.mark.parametrize('arch', TIMM)
def test_timm_encoder(dls, arch): check(dls, arch)


@pytest.mark.skipif(not HAS_TIMM, reason='timm is not installed')
def test_timm_offline_message():
    import socket
    try: socket.create_connection(('huggingface.co', 443), timeout=3).close(); pytest.skip('the hub is reachable')
    except OSError: pass                          # (asking timm itself would retry for about 45 s before failing)
    with pytest.raises(PretrainedWeightsError, match="pretrained=False"): create_body('regnetx_002', pretrained=True)


def test_unknown_name():
    with pytest.raises(KeyError, match='no_such_encoder'): encoder_meta('no_such_encoder')
