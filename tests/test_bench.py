"Smoke tests of the benchmark scripts: they run, in a quick form, and print the JSON their docs promise."
import json, subprocess, sys
from pathlib import Path
import pytest

BENCH = Path(__file__).resolve().parent.parent/'bench'


def run(script, *args, timeout=300):
    r = subprocess.run([sys.executable, str(BENCH/script), *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_nuclei_quick():
    out = run('nuclei.py', '--quick')
    assert [(r['seed'], r['weight_maps']) for r in out['runs']] == [(0, False), (0, True)]
    for k in ('with', 'without'):
        assert 0 <= out[k]['object_f1'] <= 1 and 0 <= out[k]['dice'] <= 1 and out[k]['train_s'] > 0
    assert out['object_f1_gain'] == pytest.approx(out['with']['object_f1'] - out['without']['object_f1'], abs=1e-4)


def test_tiled_small():
    out = run('tiled.py', '--size', '96', '--tile', '64', '--arch', 'resnet18', '--n-out', '3',
              '--methods', 'unet_fastai,unet_fastai_labels')
    ours, lbl = out['results']['unet_fastai'], out['results']['unet_fastai_labels']
    assert ours['shape'] == [3, 96, 96] and lbl['shape'] == [96, 96]
    assert ours['class_freqs'] == lbl['class_freqs']            # labels are the argmax of the probabilities
    assert ours['wall_s'] > 0 and ours['peak_rss_mb'] > 0 and ours['mpx_per_s'] > 0


def test_speed_small():
    out = run('speed.py', '--size', '64', '96', '--bs', '2', '--steps', '1', '--warmup', '0', '--no-rss',
              '--methods', 'fastai,unet_fastai')
    f, u = out['results']['fastai'], out['results']['unet_fastai']
    assert f['params'] == u['params'] == 41_222_168                 # the same architecture
    assert u['gmac_per_img'] > 0 and u['train_img_s'] > 0 and u['infer_img_s'] > 0
    assert out['unet_fastai_vs_fastai']['train'] == pytest.approx(u['train_img_s']/f['train_img_s'], rel=0.01)
