"The encoder matrix: every registered encoder, and a few timm ones, builds a U-Net that predicts at full size, trains, and freezes right."
import importlib.util
import pytest, torch, torch.nn as nn
from unet_fastai.models.encoders import encoders, encoder_meta, create_body, PretrainedWeightsError
from unet_fastai.synth import make_synth_camvid
from unet_fastai.data import camvid_dls
from unet_fastai.learner import unet_learner

HAS_TIMM = importlib.util.find_spec('timm') is not None
TIMM = ['resnet50d', 'convnext_atto', 'timm:efficientnet_b0', 'regnetx_002', 'mobilenetv3_small_100']
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
    assert all(p.grad is not None for p in model.final_conv.parameters())
    assert model.encoder[0].weight.grad is not None if hasattr(model.encoder[0], 'weight') else True
    assert len(learn.opt.param_groups if learn.opt else learn.splitter(model)) >= 2
    learn.freeze()
    for m in model.encoder.modules():
        for p in m.parameters(recurse=False):
            assert p.requires_grad == isinstance(m, NORMS), f"{arch}: {type(m).__name__} requires_grad={p.requires_grad}"
    assert all(p.requires_grad for p in model.final_conv.parameters())


@pytest.mark.parametrize('arch', sorted(encoders))
def test_registered_encoder(dls, arch): check(dls, arch)


@pytest.mark.skipif(not HAS_TIMM, reason='timm is not installed')
@pytest.mark.parametrize('arch', TIMM)
def test_timm_encoder(dls, arch): check(dls, arch)


@pytest.mark.skipif(not HAS_TIMM, reason='timm is not installed')
def test_timm_offline_message():
    import timm
    try: timm.create_model('regnetx_002', pretrained=True, features_only=True); pytest.skip('weights are reachable')
    except Exception: pass
    with pytest.raises(PretrainedWeightsError, match="pretrained=False"): create_body('regnetx_002', pretrained=True)


def test_unknown_name():
    with pytest.raises(KeyError, match='no_such_encoder'): encoder_meta('no_such_encoder')
