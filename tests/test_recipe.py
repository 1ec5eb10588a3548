"`bench/recipe.py --quick`: the accuracy-per-compute ablation (issue #7) produces every row, with finite values."
import importlib.util, json, math, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = ['default', 'norm_batch', 'pow2', 'narrow', 'middle_slim', 'bottle', 'head_light', 'preset_fast', 'smp']
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
    assert rows['preset_fast']['config'] == dict(norm_type='Batch', decoder_channels='narrow', middle='slim', head='light')
    for r in ROWS[1:-2]: assert (rows[r]['params'], rows[r]['gmac_per_img']) != (rows['default']['params'], rows['default']['gmac_per_img'])
    if 'smp' in rows: assert 'preset_vs_smp' in quick
