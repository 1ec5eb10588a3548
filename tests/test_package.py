"Package-level guarantees: the model code is pure torch, and `unet_fastai.all` extends fastai's namespace."
import subprocess, sys


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_models_do_not_import_fastai():
    r = _run("import unet_fastai.models, unet_fastai.models.unet, unet_fastai.models.encoders, sys; "
             "bad = [m for m in sys.modules if m == 'fastai' or m.startswith('fastai.')]; "
             "assert not bad, bad; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_all_is_fastai_plus_unet_fastai():
    r = _run("from unet_fastai.all import *\n"
             "import fastai.vision.all as fa, unet_fastai.learner as ul, unet_fastai.models as um\n"
             "assert unet_learner is ul.unet_learner\n"
             "assert DynamicUnet is um.DynamicUnet\n"
             "assert create_body is fa.create_body and ConvLayer is fa.ConvLayer and NormType is fa.NormType\n"
             "assert Learner is fa.Learner and DataBlock is fa.DataBlock and resnet34 is fa.resnet34\n"
             "assert camvid_dls and make_synth_camvid and predict_tiled and ObjectF1 and PixelAccuracy\n"
             "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_fastai_norm_type_accepted_by_our_model():
    "fastai's `NormType.Weight` (what `from unet_fastai.all import *` exports) configures our decoder."
    r = _run("from unet_fastai.all import *\n"
             "m = create_unet_model('resnet18', 3, 64, pretrained=False, norm_type=NormType.Weight)\n"
             "assert any('parametrizations' in n for n, _ in m.named_parameters())\n"
             "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
