"""Deployment: ONNX, TorchScript and torch.export graphs match the eager model at several sizes; safetensors
save/load round trips; fastai `.pth` files are loaded without unpickling anything but tensors."""
import copy, json, os, pickle, subprocess, sys
import pytest, torch
import torch.nn as nn
from torch.nn.utils import parametrize
from unet_fastai.models import create_unet_model, fastai_layout, NormType, DynamicUnet
from unet_fastai.inference.export import export_onnx, export_torchscript, export_program
from unet_fastai.inference.io import save_model, load_model, load_fastai_weights
from unet_fastai.inference.fold import fuse_bn, prepare_for_export

# (batch, H, W): two sizes with H != W, and one, with a batch of 2, that is not a multiple of the stride (32)
SHAPES = [(1, 64, 96), (1, 96, 64), (2, 36, 70)]
ATOL = 1e-4


def _perturb(m):
    "Non-trivial BatchNorm statistics and attention, so the comparisons exercise them."
    with torch.no_grad():
        for o in m.modules():
            if isinstance(o, nn.BatchNorm2d): o.running_mean.uniform_(-.1, .1); o.running_var.uniform_(.5, 1.5)
            if hasattr(o, 'gamma'): o.gamma.fill_(.5)
    return m.eval()


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    return {'plain': _perturb(create_unet_model('resnet18', 3, 64, pretrained=False)),
            'fancy': _perturb(create_unet_model('resnet18', 2, 64, pretrained=False, norm_type=NormType.Weight,
                                                self_attention=True, blur=True, y_range=(-3., 3.))),
            # `preset='fast'`: BatchNorm in the decoder, no middle conv (an empty Sequential), tapered widths
            'fast': _perturb(create_unet_model('resnet18', 3, 64, pretrained=False, preset='fast')),
            # mirror padding: the graph pads by index (`ExportableUnet`), without a remainder by a symbolic size
            'reflect': _perturb(create_unet_model('resnet18', 3, 64, pretrained=False, pad_mode='reflect'))}


def _eager(m, x):
    with torch.no_grad(): return m(x)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, 3, h, w, generator=g) for b, h, w in SHAPES]


def _close(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= ATOL, err


# ---------------------------------------------------------------------------------------------------- exporters

@pytest.mark.parametrize('kind', ['plain', 'fancy', 'fast', 'reflect'])
def test_onnx_matches_eager_at_several_sizes(models, kind, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    onnx = pytest.importorskip('onnx')
    pytest.importorskip('onnxscript')
    m = models[kind]
    p = export_onnx(m, tmp_path/'m.onnx', example_size=(70, 90))
    proto = onnx.load(str(p))
    assert proto.opset_import[0].version == 17
    assert not list(tmp_path.glob('*.data')), "weights must be inside the .onnx file"
    assert json.loads({q.key: q.value for q in proto.metadata_props}['unet_fastai.config']) == m.config
    sess = ort.InferenceSession(str(p), providers=['CPUExecutionProvider'])
    for x in _inputs():
        _close(sess.run(None, {'input': x.numpy()})[0], _eager(m, x))


@pytest.mark.parametrize('kind', ['plain', 'fancy', 'fast', 'reflect'])
def test_torchscript_matches_eager_at_several_sizes(models, kind, tmp_path):
    m = models[kind]
    export_torchscript(m, tmp_path/'m.pt')
    extra = {'config.json': ''}
    sm = torch.jit.load(str(tmp_path/'m.pt'), _extra_files=extra)
    assert json.loads(extra['config.json']) == m.config
    for x in _inputs() + [torch.randn(1, 3, 20, 24)]:    # scripting keeps eager's handling of sizes < stride
        with torch.no_grad(): _close(sm(x), _eager(m, x))


@pytest.mark.parametrize('kind', ['plain', 'fancy', 'fast', 'reflect'])
def test_torch_export_matches_eager_at_several_sizes(models, kind, tmp_path):
    m = models[kind]
    export_program(m, torch.randn(2, 3, 70, 90), path=tmp_path/'m.pt2')
    pm = torch.export.load(str(tmp_path/'m.pt2')).module()
    for x in _inputs() + [torch.randn(1, 3, 33, 40)]:       # 33 = stride+1, the smallest dynamic size
        with torch.no_grad(): _close(pm(x), _eager(m, x))
    with pytest.raises(Exception):                           # below stride+1: refused by a guard, never wrong
        pm(torch.randn(1, 3, 32, 64))


@pytest.mark.parametrize('pad_mode', [None, 'reflect'])
def test_torch_export_rounding_down_encoder(pad_mode):
    "VGG's 2×2 max-pools round odd sizes down: unpadded, its upsampled maps get a repeated row; both modes export."
    torch.manual_seed(0)
    m = _perturb(create_unet_model('vgg11_bn', 2, 64, pretrained=False, pad_mode=pad_mode))
    if pad_mode is None: assert all(b.fit.pad == 1 for b in m.decoder.blocks)
    pm = export_program(m, torch.randn(2, 3, 70, 90)).module()
    for x in [torch.randn(1, 3, 64, 70), torch.randn(2, 3, 97, 131)]:
        with torch.no_grad(): _close(pm(x), _eager(m, x))
    small = 40 if pad_mode is None else 32              # 33..63 make a 1-pixel bottleneck without padding
    with pytest.raises(ValueError, match='>= 64' if pad_mode is None else '>= 33'):
        export_program(m, torch.randn(2, 3, small, 90))


def test_torch_export_fixed_size(models):
    m = models['plain']
    static = export_program(m, torch.randn(1, 3, 64, 96), dynamic_hw=False).module()
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad(): _close(static(x), _eager(m, x))
    with pytest.raises(Exception): static(torch.randn(1, 3, 96, 64))
    with pytest.raises(ValueError, match='stride'): export_program(m, torch.randn(1, 3, 32, 64))


def test_fuse_bn_then_script(models, tmp_path):
    m = models['plain']
    f = fuse_bn(m)
    assert sum(isinstance(o, nn.BatchNorm2d) for o in f.modules()) == 1 + len(m.decoder.blocks)
    sm = export_torchscript(m, tmp_path/'f.pt', fuse=True)
    for x in _inputs()[1:]:
        with torch.no_grad():
            _close(f(x), _eager(m, x))
            _close(sm(x), _eager(m, x))


def test_exports_leave_the_model_untouched(models, tmp_path):
    m = models['fancy']
    m.train()
    try:
        before = {k: v.clone() for k, v in m.state_dict().items()}
        export_torchscript(m, tmp_path/'m.pt')
        p = prepare_for_export(m, fuse=True)
        assert m.training and not p.training
        assert any(parametrize.is_parametrized(o) for o in m.modules())
        assert not any(parametrize.is_parametrized(o) for o in p.modules())
        after = m.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    finally: m.eval()
    x = _inputs()[0]
    with torch.no_grad(): _close(m(x), p(x))      # and the original still runs: its parametrizations still work


# ---------------------------------------------------------------------------------------------- safe weights

def _no_pickle(monkeypatch):
    "Make every way of unpickling fail loudly."
    def boom(*a, **k): raise AssertionError('something was unpickled')
    monkeypatch.setattr(torch, 'load', boom)
    monkeypatch.setattr(pickle, 'load', boom)
    monkeypatch.setattr(pickle, 'loads', boom)
    monkeypatch.setattr(pickle, 'Unpickler', boom)


@pytest.mark.parametrize('kind', ['plain', 'fancy', 'fast', 'reflect'])
def test_save_load_round_trip(models, kind, tmp_path, monkeypatch):
    m = models[kind]
    stats = (torch.tensor([.1, .2, .3]), torch.tensor([.4, .5, .6]))
    save_model(m, tmp_path/'model', stats=stats, codes=['bg', 'cell', 'edge'][:m.n_out])
    assert sorted(o.name for o in (tmp_path/'model').iterdir()) == ['config.json', 'model.safetensors']
    _no_pickle(monkeypatch)                          # loading never unpickles
    m2 = load_model(tmp_path/'model')
    assert isinstance(m2, DynamicUnet) and not m2.training
    cfg = m2.config
    assert cfg['architecture'] == 'DynamicUnet'
    assert {k: v for k, v in cfg.items() if k not in ('architecture', 'stats', 'codes', 'unet_fastai_version')} == m.config
    assert cfg['codes'] == ['bg', 'cell', 'edge'][:m.n_out]
    assert torch.allclose(torch.tensor(cfg['stats']), torch.tensor([[.1, .2, .3], [.4, .5, .6]]))
    for x in _inputs():
        with torch.no_grad(): assert torch.equal(m2(x), m(x))
    # a reloaded model saves again with its stats and codes
    save_model(m2, tmp_path/'again')
    assert json.loads((tmp_path/'again'/'config.json').read_text()) == cfg


def test_save_from_learner_like_object(models, tmp_path):
    "Duck typing: anything with `.model` and `.dls` is a Learner; codes from `dls.vocab`, stats from a `Normalize`."
    from types import SimpleNamespace
    class Normalize:
        def __init__(self): self.mean, self.std = torch.tensor([.1, .2, .3]).view(1, 3, 1, 1), torch.tensor([.4, .5, .6]).view(1, 3, 1, 1)
    dls = SimpleNamespace(vocab=['a', 'b', 'c'], after_batch=SimpleNamespace(fs=[object(), Normalize()]))
    save_model(SimpleNamespace(model=models['plain'], dls=dls), tmp_path/'l')
    cfg = json.loads((tmp_path/'l'/'config.json').read_text())
    assert cfg['codes'] == ['a', 'b', 'c']
    assert torch.allclose(torch.tensor(cfg['stats']), torch.tensor([[.1, .2, .3], [.4, .5, .6]]))
    # without stats or codes anywhere, they are null rather than guessed
    save_model(models['plain'], tmp_path/'m')
    cfg = json.loads((tmp_path/'m'/'config.json').read_text())
    assert cfg['stats'] is None and cfg['codes'] is None


def test_save_from_real_fastai_learner(models, tmp_path):
    pytest.importorskip('fastai')
    from fastai.data.core import DataLoaders, TfmdDL
    from fastai.data.transforms import Normalize
    from fastai.learner import Learner
    items = [(torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.long))] * 2
    dl = TfmdDL(items, bs=2, after_batch=[Normalize.from_stats([.1, .2, .3], [.4, .5, .6], cuda=False)])
    dls = DataLoaders(dl, dl)
    dls.vocab = ['bg', 'cell', 'edge']
    learn = Learner(dls, models['plain'], loss_func=nn.CrossEntropyLoss())
    save_model(learn, tmp_path/'l')
    cfg = json.loads((tmp_path/'l'/'config.json').read_text())
    assert cfg['codes'] == ['bg', 'cell', 'edge']
    assert torch.allclose(torch.tensor(cfg['stats']), torch.tensor([[.1, .2, .3], [.4, .5, .6]]))


def _copy_dir(src, dst, **config_changes):
    dst.mkdir()
    (dst/'model.safetensors').write_bytes((src/'model.safetensors').read_bytes())
    cfg = json.loads((src/'config.json').read_text())
    (dst/'config.json').write_text(json.dumps({**cfg, **config_changes}))
    return dst


def test_load_model_errors_name_the_file(models, tmp_path):
    save_model(models['plain'], tmp_path/'ok')
    bad = _copy_dir(tmp_path/'ok', tmp_path/'n_out', n_out=5)
    with pytest.raises(ValueError) as e: load_model(bad)
    msg = str(e.value)
    assert str(bad/'config.json') in msg and str(bad/'model.safetensors') in msg
    assert 'final_conv.0.weight: (3, 99, 1, 1) in the file, (5, 99, 1, 1) in the model' in msg
    bad = _copy_dir(tmp_path/'ok', tmp_path/'arch', arch='resnet34')
    with pytest.raises(ValueError, match=r"(?s)arch='resnet34'.*missing from the file: encoder\.4\.2"): load_model(bad)
    bad = _copy_dir(tmp_path/'ok', tmp_path/'unknown', arch='not_a_net')
    with pytest.raises(ValueError, match='not_a_net'): load_model(bad)
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='config.json'): load_model(tmp_path/'empty')
    (tmp_path/'ok'/'model.safetensors').rename(tmp_path/'ok'/'other')
    with pytest.raises(FileNotFoundError, match='model.safetensors'): load_model(tmp_path/'ok')
    (tmp_path/'json').mkdir()
    (tmp_path/'json'/'config.json').write_text('{not json')
    (tmp_path/'json'/'model.safetensors').write_bytes(b'')
    with pytest.raises(ValueError, match='not valid JSON'): load_model(tmp_path/'json')
    with pytest.raises(ValueError, match='no `.config`'): save_model(nn.Conv2d(3, 3, 1), tmp_path/'plain')


# ---------------------------------------------------------------------------------------------- pickle safety

def _as_fastai(model):
    "`model`'s state dict under fastai's `layers.i` names, as in a `learn.save` file."
    sd, res = model.state_dict(), {}
    for i, name in enumerate(fastai_layout(model)):
        if name is None: continue
        for k, v in sd.items():
            if k.startswith(name + '.'): res[f'layers.{i}.' + k[len(name)+1:]] = v
    return res


class SystemPayload:
    "Unpickling this calls `os.system('touch SENTINEL')`."
    def __init__(self, f): self.f = str(f)
    def __reduce__(self): return (os.system, (f'touch {self.f}',))


class ExecPayload:
    "Unpickling this calls the builtin `exec` on code that writes SENTINEL."
    def __init__(self, f): self.f = str(f)
    def __reduce__(self): return (exec, (f"open({self.f!r}, 'w').write('pwned')",))


@pytest.mark.parametrize('payload', [SystemPayload, ExecPayload])
def test_load_fastai_weights_refuses_code(models, payload, tmp_path):
    m = models['plain']
    sentinel = tmp_path/'SENTINEL'
    evil = tmp_path/'evil.pth'
    torch.save({'model': _as_fastai(m), 'opt': payload(sentinel)}, evil)
    target = copy.deepcopy(m)
    with pytest.raises(pickle.UnpicklingError, match='refused to load'): load_fastai_weights(target, evil)
    assert not sentinel.exists()
    # the payload is real: an unrestricted load runs it
    torch.load(evil, weights_only=False)
    assert sentinel.exists()


def test_safetensors_file_is_never_unpickled(models, tmp_path, monkeypatch):
    sentinel = tmp_path/'SENTINEL'
    save_model(models['plain'], tmp_path/'ok')
    d = tmp_path/'evil'
    d.mkdir()
    (d/'config.json').write_text((tmp_path/'ok'/'config.json').read_text())
    torch.save({'x': ExecPayload(sentinel)}, d/'model.safetensors')        # a pickle where safetensors belong
    _no_pickle(monkeypatch)
    with pytest.raises(ValueError, match='is not a valid safetensors file'): load_model(d)
    assert not sentinel.exists()


def test_load_fastai_weights(models, tmp_path):
    m = models['plain']
    torch.save({'model': _as_fastai(m), 'opt': {'state': [], 'hypers': []}}, tmp_path/'m.pth')
    torch.save(_as_fastai(m), tmp_path/'bare.pth')                         # learn.save(with_opt=False)
    torch.save({'model': m.state_dict(), 'opt': {}}, tmp_path/'ours.pth')  # from this library's unet_learner
    x = _inputs()[2]
    for f in ('m.pth', 'bare.pth', 'ours.pth'):
        m2 = load_fastai_weights(create_unet_model('resnet18', 3, 64, pretrained=False), tmp_path/f).eval()
        with torch.no_grad(): assert torch.equal(m2(x), m(x))
    with pytest.raises(FileNotFoundError, match='nope.pth'): load_fastai_weights(m2, tmp_path/'nope.pth')
    other = create_unet_model('resnet18', 5, 64, pretrained=False)
    with pytest.raises(RuntimeError, match='does not match'): load_fastai_weights(other, tmp_path/'m.pth')
    with pytest.raises(RuntimeError, match='do not fit this model'): load_fastai_weights(other, tmp_path/'ours.pth')


def test_load_real_fastai_learn_save_with_optimizer(tmp_path):
    "fastai's `learn.save` stores the optimizer state with fastcore `L`s: loaded with `weights_only`, nothing run."
    pytest.importorskip('fastai')
    from fastai.learner import save_model as fa_save_model
    from fastai.optimizer import Adam
    from fastai.vision.learner import create_unet_model as fa_create_unet_model
    from torchvision.models import resnet18
    torch.manual_seed(0)
    fa = fa_create_unet_model(resnet18, 3, (64, 64), pretrained=False)
    opt = Adam(fa.parameters(), lr=1e-3)
    fa(torch.randn(1, 3, 64, 64)).mean().backward()
    opt.step()
    fa_save_model(tmp_path/'learn.pth', fa, opt, with_opt=True)
    ours = load_fastai_weights(create_unet_model('resnet18', 3, 64, pretrained=False), tmp_path/'learn.pth').eval()
    x = torch.randn(1, 3, 64, 96)      # a multiple of 32: fastai's model resizes other sizes, ours pads them
    with torch.no_grad(): _close(ours(x), fa.eval()(x))


def test_export_module_does_not_import_fastai():
    code = ("import sys, unet_fastai.inference.export; "
            "bad = [m for m in sys.modules if m == 'fastai' or m.startswith('fastai.')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
