"The foundation's acceptance checks for the model: shapes at any size, parameter count, offline errors."
import pytest, torch
from unet_fastai.models import create_unet_model, create_body, weights_path, PretrainedWeightsError


@pytest.fixture(scope="module")
def r34():
    return create_unet_model("resnet34", 12, (128, 128), pretrained=False).eval()


def test_param_count(r34):
    assert sum(p.numel() for p in r34.parameters()) == 41_222_168


@pytest.mark.parametrize("shape", [(2, 3, 360, 480), (1, 3, 97, 131), (1, 3, 32, 32), (1, 3, 33, 65)])
def test_output_is_input_size(r34, shape):
    with torch.no_grad():
        assert r34(torch.randn(shape)).shape == (shape[0], 12, *shape[2:])


def test_one_channel_input():
    m = create_unet_model("resnet34", 12, (64, 64), pretrained=False, n_in=1).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 64, 64)).shape == (1, 12, 64, 64)


def test_train_mode_backward_at_odd_size():
    m = create_unet_model("resnet18", 3, (64, 64), pretrained=False)
    y = m(torch.randn(2, 3, 45, 77))
    assert y.shape == (2, 3, 45, 77)
    y.square().mean().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_no_activation_kept_after_forward(r34):
    "fastai keeps the last batch's skip activations alive in its hooks (fastai#2946); we keep none."
    import gc, weakref
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(): y = r34(x)
    ref = weakref.ref(y); del y; gc.collect()
    assert ref() is None
    assert not any(m._forward_hooks for m in r34.modules())


@pytest.mark.skipif(weights_path("resnet34").exists(), reason="ImageNet weights are cached: nothing to download")
def test_offline_pretrained_error_says_how_to_fix():
    with pytest.raises(PretrainedWeightsError) as e:
        create_body("resnet34", pretrained=True)
    msg = str(e.value)
    assert "pretrained=False" in msg and "resnet34-b627a593.pth" in msg and "torch hub cache" in msg
    assert "Traceback" not in msg
