"""Sharing and reusing trained U-Nets: `save_pretrained`/`from_pretrained` round trips, another number of classes or
channels, the Hugging Face cache read offline through `huggingface_hub` itself, uploads (monkeypatched: no test
touches the network), `unet_learner(init=...)`, and the CLI's `train --init` and `export --format hub`."""
import json, os, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pytest, torch
import torch.nn as nn
from unet_fastai.models import create_unet_model, create_unetpp_model
from unet_fastai.inference.hub import save_pretrained, from_pretrained
from unet_fastai.inference.io import load_model
from unet_fastai.segmentation.synth import make_synth_camvid

pytest.importorskip('huggingface_hub')
CLI = [sys.executable, "-c", "import sys; from unet_fastai.cli import main; sys.exit(main())"]


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    torch.manual_seed(0)
    m = create_unet_model('resnet18', 12, 64, pretrained=False).eval()
    with torch.no_grad():
        for o in m.modules():
            if isinstance(o, nn.BatchNorm2d): o.running_mean.uniform_(-.1, .1); o.running_var.uniform_(.5, 1.5)
    d = tmp_path_factory.mktemp('hub')/'camvid'
    save_pretrained(m, d, stats=([0.5, 0.4, 0.3], [0.2, 0.2, 0.2]), codes=[f'c{i}' for i in range(12)], dataset='synth')
    return m, d


def test_round_trip_equal_outputs(saved):
    m, d = saved
    assert sorted(p.name for p in d.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    x = torch.randn(2, 3, 50, 70)
    m2 = from_pretrained(d)
    with torch.no_grad(): torch.testing.assert_close(m2(x), m(x), atol=1e-6, rtol=1e-6)
    assert m2.config['codes'][3] == 'c3' and not m2.training and m2.reinitialised == []
    card = (d/'README.md').read_text()
    for want in ('library_name: unet_fastai', '## Classes', '0: c0', '## Preprocessing', 'mean [0.5', '## Training data',
                 'synth', "from_pretrained('path/to/this/folder')"):
        assert want in card, want


def test_predict_tiled_applies_the_saved_preprocessing(saved):
    "Prediction does what training did: a loaded model's recorded statistics normalise its input in `predict_tiled`."
    from unet_fastai.inference.tiled import predict_tiled
    from unet_fastai.preprocess import normalize_input, to_chw
    m = from_pretrained(saved[1])
    img = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    raw = predict_tiled(m, img, out='raw', progress=False)
    with torch.no_grad(): want = m(normalize_input(to_chw(img)[None], m.config['stats']))[0]
    torch.testing.assert_close(raw, want, atol=1e-4, rtol=1e-4)
    assert (predict_tiled(m, img, out='raw', progress=False, normalize=False) - raw).abs().max() > 0.1


def test_codes_from_fastai_mask_block(saved, tmp_path):
    "`SegmentationDataLoaders` keep their codes on `AddMaskCodes`, not in `dls.vocab`: the card and config still get them."
    from unet_fastai.learner import unet_learner
    dls = _two_class_dls(tmp_path)
    learn = unet_learner(dls, 'resnet18', pretrained=False)
    save_pretrained(learn, tmp_path/'cars')
    assert json.loads((tmp_path/'cars'/'config.json').read_text())['codes'] == ['rest', 'car']
    assert '0: rest, 1: car' in (tmp_path/'cars'/'README.md').read_text()


def test_other_n_out_keeps_all_but_the_final_conv(saved):
    m, d = saved
    with pytest.warns(UserWarning, match=r"re-initialised for n_out=5.*head\.final_conv\.0"):
        m5 = from_pretrained(d, n_out=5)
    sd, sd5 = m.state_dict(), m5.state_dict()
    changed = sorted(k for k in sd5 if k not in sd or sd5[k].shape != sd[k].shape or not torch.equal(sd5[k], sd[k]))
    assert changed == ['head.final_conv.0.bias', 'head.final_conv.0.weight'], changed
    assert sorted(m5.reinitialised) == changed
    assert m5(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64) and m5.config['codes'] is None


def test_other_n_in_adapts_the_first_conv(saved):
    m, d = saved
    with pytest.warns(UserWarning, match='adapted to 1 input channels'):
        m1 = from_pretrained(d, n_in=1)
    torch.testing.assert_close(m1.encoder[0].weight, m.encoder[0].weight.sum(1, keepdim=True))
    assert 'head.res_block.convpath.0.0.weight' in m1.reinitialised     # the last cross sees the input: re-initialised
    assert m1.config['stats'] is None                                  # 3-channel statistics do not apply to 1 channel


def test_unetpp_round_trip(tmp_path):
    torch.manual_seed(0)
    m = create_unetpp_model('resnet18', 3, 64, pretrained=False).eval()
    save_pretrained(m, tmp_path/'pp')
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad(): torch.testing.assert_close(from_pretrained(tmp_path/'pp')(x), m(x), atol=1e-6, rtol=1e-6)


def test_refuses_to_overwrite(saved, tmp_path):
    m, _ = saved
    (tmp_path/'README.md').write_text('my notes')
    with pytest.raises(FileExistsError, match='overwrite=True'): save_pretrained(m, tmp_path)
    assert (tmp_path/'README.md').read_text() == 'my notes' and not (tmp_path/'config.json').exists()
    save_pretrained(m, tmp_path, overwrite=True)
    assert 'library_name: unet_fastai' in (tmp_path/'README.md').read_text()


def test_float32_weights(tmp_path):
    m = create_unet_model('resnet18', 2, 64, pretrained=False).to(torch.bfloat16)
    save_pretrained(m, tmp_path/'bf')
    from safetensors.torch import load_file
    assert {v.dtype for v in load_file(str(tmp_path/'bf'/'model.safetensors')).values()} <= {torch.float32, torch.int64}


def test_push_to_hub_uploads_the_folder(saved, tmp_path, monkeypatch):
    import huggingface_hub
    calls = []
    class FakeApi:
        def __init__(self, token=None): calls.append(('init', token))
        def create_repo(self, repo_id, private=None, exist_ok=False): calls.append(('create', repo_id, exist_ok))
        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message):
            calls.append(('upload', repo_id, sorted(p.name for p in Path(folder_path).iterdir()), sorted(allow_patterns)))
    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    m, _ = saved
    with pytest.raises(ValueError, match='needs repo_id'): save_pretrained(m, tmp_path/'a', push_to_hub=True)
    save_pretrained(m, tmp_path/'b', push_to_hub=True, repo_id='me/unet', token='t')
    files = ['README.md', 'config.json', 'model.safetensors']
    assert calls == [('init', 't'), ('create', 'me/unet', True), ('upload', 'me/unet', files, files)]
    assert "from_pretrained('me/unet')" in (tmp_path/'b'/'README.md').read_text()


def _cache(saved, root):
    "A Hugging Face cache holding `some-user/some-unet`, laid out as `huggingface_hub` lays it out."
    _, d = saved
    repo = root/'models--some-user--some-unet'
    snap = repo/'snapshots'/('a' * 40)
    snap.mkdir(parents=True)
    for f in ('config.json', 'model.safetensors', 'README.md'): (snap/f).write_bytes((d/f).read_bytes())
    (repo/'refs').mkdir(); (repo/'refs'/'main').write_text('a' * 40)
    return root


def test_repo_id_offline_from_the_cache(saved, tmp_path):
    cache = _cache(saved, tmp_path/'hf')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(cache)}
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from unet_fastai.inference.hub import from_pretrained\n"
            "m = from_pretrained({!r}, n_out=2); print(m.config['n_out'], m.config['arch'])")
    r = subprocess.run([sys.executable, '-c', code.format('some-user/some-unet')], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ['2', 'resnet18'], r.stderr[-2000:]
    r = subprocess.run([sys.executable, '-c', code.format('some-user/other-unet')], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and 'is not in the Hugging Face cache' in r.stderr and 'hf download' in r.stderr, r.stderr[-2000:]


def test_not_a_folder_nor_a_repo_id(tmp_path):
    with pytest.raises(FileNotFoundError, match='neither a folder nor a Hub repo id'):
        from_pretrained(str(tmp_path/'no'/'such'/'dir'))


def _two_class_dls(tmp_path):
    from fastai.vision.all import SegmentationDataLoaders, PILMask
    from PIL import Image
    src = make_synth_camvid(tmp_path/'scenes', n_train=6, n_valid=2, seed=3)
    files = sorted((src/'train').glob('*.png')) + sorted((src/'val').glob('*.png'))
    def label(f):
        m = np.array(Image.open(Path(str(f).replace('/train/', '/trainannot/').replace('/val/', '/valannot/'))))
        return PILMask.create((m == 8).astype(np.uint8))          # car or not
    return SegmentationDataLoaders.from_label_func(src, files, label, codes=['rest', 'car'], bs=2, num_workers=0,
                                                   valid_pct=0.25, seed=0)


def test_learner_from_a_trained_unet_trains_the_new_layers_first(saved, tmp_path):
    from unet_fastai.learner import unet_learner
    _, d = saved
    dls = _two_class_dls(tmp_path)
    with pytest.warns(UserWarning, match='re-initialised'): learn = unet_learner(dls, init=d)
    assert learn.model.config['n_out'] == 2 and learn.arch == 'resnet18'
    norm = [t for t in dls.after_batch.fs if type(t).__name__ == 'Normalize']
    assert len(norm) == 1 and torch.allclose(norm[0].mean.flatten().cpu(), torch.tensor([0.5, 0.4, 0.3]))   # the saved stats
    learn.create_opt(); learn.freeze()
    bn = {n for n, o in learn.model.named_modules() if isinstance(o, nn.BatchNorm2d)}
    train = {n for n, p in learn.model.named_parameters() if p.requires_grad and n.rsplit('.', 1)[0] not in bn}
    assert train == set(learn.model.reinitialised) == {'head.final_conv.0.weight', 'head.final_conv.0.bias'}
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fine_tune(1, freeze_epochs=1)
    assert len(learn.opt.param_groups) == 4 and learn.opt.param_groups[-1]['lr'] > learn.opt.param_groups[0]['lr']
    assert not torch.equal(before['encoder.0.weight'], learn.model.state_dict()['encoder.0.weight'])   # then everything
    with pytest.raises(ValueError, match="is a U-Net on 'resnet18'"): unet_learner(dls, 'resnet34', init=d)
    with pytest.raises(ValueError, match=r"drop \['blur'\]"): unet_learner(dls, init=d, blur=True)
    with pytest.raises(ValueError, match='pass `arch`'): unet_learner(dls)


def test_cli_export_hub_and_train_init(saved, tmp_path):
    _, d = saved
    r = subprocess.run(CLI + ['export', '--model', str(d), '--format', 'hub', '--out', str(tmp_path/'h')],
                       capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path/'h'/'README.md').exists(), r.stderr[-2000:]
    r = subprocess.run(CLI + ['export', '--model', str(d), '--format', 'hub', '--out', str(tmp_path/'h')],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'pass --overwrite' in r.stderr
    r = subprocess.run(CLI + ['export', '--model', str(d), '--format', 'hub', '--out', str(tmp_path/'h'), '--overwrite'],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    data = make_synth_camvid(tmp_path/'camvid', n_train=4, n_valid=2)
    r = subprocess.run(CLI + ['train', '--data', str(data), '--out', str(tmp_path/'run'), '--init', str(tmp_path/'h'),
                              '--epochs', '1', '--bs', '2', '--no-progress'], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads((tmp_path/'run'/'state.json').read_text())
    assert (st['init'], st['freeze_epochs'], st['arch'], st['pretrained']) == (str(tmp_path/'h'), 1, 'resnet18', False)
    assert load_model(tmp_path/'run'/'model').config['arch'] == 'resnet18'
