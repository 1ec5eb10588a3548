"unet_fastai's DynamicUnet is fastai 2.8's DynamicUnet: same parameters, same outputs for the same weights."
import pytest, torch
from torchvision.models import resnet34, resnet18
from unet_fastai.models import DynamicUnet, create_body, load_fastai_state_dict, NormType

fa_learner = pytest.importorskip("fastai.vision.learner")
fa_unet = pytest.importorskip("fastai.vision.models.unet")
from fastai.layers import NormType as FaNormType


def _pair(arch, n_out, size, **kw):
    torch.manual_seed(0)
    fa = fa_learner.create_unet_model(arch, n_out, size, pretrained=False,
                                      **{k: (getattr(FaNormType, v.name) if isinstance(v, NormType) else v) for k, v in kw.items()})
    ours = DynamicUnet(create_body(arch, pretrained=False), n_out, size, **kw)
    return fa.eval(), ours.eval()


def test_param_count_resnet34_12():
    fa, ours = _pair(resnet34, 12, (128, 128))
    n = sum(p.numel() for p in ours.parameters())
    assert n == 41_222_168
    assert n == sum(p.numel() for p in fa.parameters())


@pytest.mark.parametrize("arch,kw", [
    (resnet34, {}),
    (resnet18, dict(blur=True, self_attention=True, y_range=(-3., 3.), norm_type=NormType.Weight)),
    (resnet18, dict(last_cross=False, norm_type=NormType.Batch)),
])
def test_same_outputs_after_loading_fastai_weights(arch, kw):
    fa, ours = _pair(arch, 5, (96, 128), **kw)
    # perturb BN stats so the test sees running statistics too
    with torch.no_grad():
        for m in fa.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-.1, .1); m.running_var.uniform_(.5, 1.5)
        if kw.get('self_attention'):
            for m in fa.modules():
                if hasattr(m, 'gamma'): m.gamma.fill_(0.5)
    load_fastai_state_dict(ours, fa.state_dict())
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        a, b = fa(x), ours(x)
    assert a.shape == b.shape == (2, 5, 96, 128)
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


def test_load_fastai_rejects_wrong_n_out():
    fa, _ = _pair(resnet18, 5, (64, 64))
    other = DynamicUnet(create_body(resnet18, pretrained=False), 7, (64, 64))
    with pytest.raises(RuntimeError, match="does not match"):
        load_fastai_state_dict(other, fa.state_dict())


def test_bottle_works_where_fastai_breaks():
    "fastai 2.8's `bottle=True` builds a final conv for 99 channels after a ResBlock that outputs 49: its forward fails."
    fa, ours = _pair(resnet18, 5, (64, 64), bottle=True)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match="channels"):
        fa(x)
    assert ours.head.final_conv[0].in_channels == 49
    assert ours(x).shape == (1, 5, 64, 64)
