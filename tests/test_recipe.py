"`bench/recipe.py --quick`: the accuracy-per-compute ablation (issue #7) produces every row, with finite values."
import importlib.util, json, math, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = ['default', 'norm_batch', 'pow2', 'narrow', 'tapered', 'middle_slim', 'middle_none', 'bottle', 'head_light', 'no_skip_bn',
        'preset_fast', 'smp']
COLS = ['miou', 'pixel_accuracy', 'train_s', 'gmac_per_img', 'params']


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'recipe.py'), '--quick', '--data', str(tmp_path_factory.mktemp('recipe'))],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_recipe_meta(quick):
    assert quick['quick'] and quick['epochs'] == 1 and quick['n_train'] == 16
    assert quick['precision'] in ('bf16', 'fp32') and quick['threads'] == 1
    assert quick['arch'] == 'resnet34' and quick['pretrained'] is False and quick['lr'] == 2e-3 and quick['bs'] == 8


@pytest.mark.parametrize('row', ROWS)
def test_recipe_row(quick, row):
    if row == 'smp' and importlib.util.find_spec('segmentation_models_pytorch') is None:
        assert 'smp' in quick['skipped']
        pytest.skip('segmentation_models_pytorch is not installed: the smp row is skipped')
    r = quick['rows'][row]
    for c in COLS: assert isinstance(r[c], (int, float)) and math.isfinite(r[c]) and r[c] >= 0, (row, c, r[c])
    assert 0 <= r['miou'] <= 1 and 0 <= r['pixel_accuracy'] <= 1 and r['train_s'] > 0 and r['params'] > 1e6


def test_recipe_rows_differ(quick):
    "The default is fastai's (41.2 M parameters), the preset is lighter, and each candidate changes the model."
    rows = quick['rows']
    assert rows['default']['params'] == 41_222_168
    assert rows['preset_fast']['gmac_per_img'] < rows['default']['gmac_per_img'] / 3
    assert rows['preset_fast']['config'] == dict(norm_type='Batch', decoder_channels='tapered', middle='none', head=16,
                                                 skip_bn=False)
    for r in ROWS[1:-2]: assert (rows[r]['params'], rows[r]['gmac_per_img']) != (rows['default']['params'], rows['default']['gmac_per_img'])
    if 'smp' in rows: assert 'preset_vs_smp' in quick


def test_preset_search_summary(tmp_path):
    "`bench/preset_search.py --summary`: mean mIoU, mean difference to smp over the seeds both ran, and seeds at or above smp."
    sys.path.insert(0, str(ROOT/'bench')); import preset_search
    runs = [('smp', 0, .40), ('smp', 1, .50), ('preset', 0, .45), ('preset', 1, .48), ('w48', 0, .30)]
    f = tmp_path/'runs.jsonl'
    f.write_text(''.join(json.dumps(dict(variant=v, seed=s, miou=m, gmac_per_img=1.)) + '\n' for v, s, m in runs))
    res = preset_search.summary(f)
    assert list(res) == ['preset', 'smp', 'w48']                       # by mean mIoU
    assert res['preset']['mean_miou'] == 0.465 and res['preset']['mean_diff_vs_smp'] == 0.015
    assert res['preset']['seeds_at_or_above_smp'] == 1 and res['w48']['mean_diff_vs_smp'] == -0.1


def test_preset_search_variants_build():
    "Every variant's options build a model (on the meta device), and its post-construction change applies."
    import torch
    sys.path.insert(0, str(ROOT/'bench')); import preset_search
    from unet_fastai.models import create_unet_model
    for name, (opts, fix) in preset_search.VARIANTS.items():
        if opts is None: continue
        with torch.device('meta'):
            m = create_unet_model('resnet18', 12, (64, 96), pretrained=False, **opts)
            if fix is not None: fix(m)
            assert m(torch.empty(1, 3, 64, 96)).shape == (1, 12, 64, 96), name
