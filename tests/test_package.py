"Package-level guarantees: the model code is pure torch, and `unet_fastai.all` extends fastai's namespace."
import subprocess, sys


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_models_do_not_import_fastai():
    r = _run("import unet_fastai.models, unet_fastai.models.unet, unet_fastai.models.encoders, unet_fastai.preprocess, "
             "unet_fastai.inference, unet_fastai.inference.io, unet_fastai.inference.export, sys; "
             "bad = [m for m in sys.modules if m == 'fastai' or m.startswith('fastai.')]; "
             "assert not bad, bad; print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_all_is_fastai_plus_unet_fastai():
    r = _run("from unet_fastai.all import *\n"
             "import fastai.vision.all as fa, unet_fastai.learner as ul, unet_fastai.models as um\n"
             "assert unet_learner is ul.unet_learner and DynamicUnet is um.DynamicUnet\n"
             "assert Learner is fa.Learner and DataBlock is fa.DataBlock and resnet34 is fa.resnet34\n"
             "assert camvid_dls and make_synth_camvid and predict_tiled and ObjectF1 and PixelAccuracy\n"
             "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_all_names_mean_this_library():
    "Every name in an `__all__` of the library is, in `unet_fastai.all`, the library's object, not fastai's."
    r = _run("import importlib, pkgutil, unet_fastai, unet_fastai.all as A\n"
             "names = {}\n"
             "for m in pkgutil.walk_packages(unet_fastai.__path__, 'unet_fastai.'):\n"
             "    if m.name in ('unet_fastai.all', 'unet_fastai._modidx', 'unet_fastai.cli'): continue\n"
             "    mod = importlib.import_module(m.name)\n"
             "    for n in getattr(mod, '__all__', []):\n"
             "        assert n not in names or getattr(mod, n) is names[n][1], f'{n} in {m.name} and {names[n][0]}'\n"
             "        names[n] = (m.name, getattr(mod, n))\n"
             "wrong = sorted(n for n, (m, o) in names.items() if getattr(A, n, None) is not o)\n"
             "assert not wrong, wrong\n"
             "for n in ['save_model', 'load_model', 'Dice', 'DiceLoss', 'FocalLoss', 'create_body', 'unet_learner',\n"
             "          'DynamicUnet', 'nuclei_dls', 'OpenMask', 'create_unet_model', 'load_fastai_state_dict', 'export_onnx',\n"
             "          'predict_tiled', 'camvid_dls', 'make_synth_camvid', 'UNet', 'border_weight_map', 'psnr', 'ssim', 'crappify']:\n"
             "    assert getattr(A, n).__module__.startswith('unet_fastai'), (n, getattr(A, n).__module__)\n"
             "import fastai.vision.all as fa\n"
             "assert {'save_model', 'load_model', 'create_body', 'Dice', 'FocalLoss'} <= set(A.shadowed)\n"
             "assert all(hasattr(fa, n) for n in A.shadowed)\n"
             "print(len(names))")
    assert r.returncode == 0 and int(r.stdout.strip()) > 200, r.stderr[-3000:]


def test_save_model_from_all_is_ours(tmp_path):
    "The trap of the first release: `save_model(learn_or_model, path)` from `all` was fastai's `save_model(file, model, opt)`."
    r = _run("from unet_fastai.all import *\n"
             "import sys\n"
             "m = create_unet_model('resnet18', 2, 64, pretrained=False)\n"
             f"save_model(m, {str(tmp_path/'m')!r})\n"
             f"m2 = load_model({str(tmp_path/'m')!r})\n"
             "assert type(m2).__name__ == 'DynamicUnet' and FocalLoss().__class__.__module__ == 'unet_fastai.segmentation.losses'\n"
             "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_fastai_norm_type_accepted_by_our_model():
    "fastai's `NormType.Weight` configures our decoder as ours does."
    r = _run("from unet_fastai.models import create_unet_model\nfrom fastai.vision.all import NormType\n"
             "m = create_unet_model('resnet18', 3, 64, pretrained=False, norm_type=NormType.Weight)\n"
             "assert any('parametrizations' in n for n, _ in m.named_parameters())\n"
             "print('ok')")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
