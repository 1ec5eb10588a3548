"""The U-Net keeps its values across refactors: each option set of `fixtures/make_reference.py`, built now and given
the weights saved then (under the state-dict key names of that time), predicts what it predicted then; seeded
resnet18 U-Nets draw the same weights; and a `save_model` folder of the first release still loads."""
import json
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
import tiny_encoder
from unet_fastai.models import create_unet_model
from unet_fastai.inference.io import load_model

HERE = Path(__file__).parent/'fixtures'
REF = load_file(str(HERE/'reference.safetensors'))
META = json.loads((HERE/'reference.json').read_text())
tiny_encoder.register()

import sys
sys.path.insert(0, str(HERE))
from make_reference import build, perturb, inputs, SEEDED   # the same builders and inputs as when they were saved


def _sd(case): return {k.split('/', 2)[2]: v for k, v in REF.items() if k.startswith(f'{case}/sd/')}


@pytest.mark.parametrize('case', list(META['cases']))
def test_outputs_match_reference(case):
    m = build(case).eval()
    m.load_state_dict(_sd(case))                    # keys of the first release: migrated on load
    for i, x in enumerate(inputs()):
        want = REF[f'{case}/out/{i}']
        with torch.no_grad(): got = m(x)            # prediction: the shuffle written into the concatenation
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m(x).detach(), want, atol=1e-5, rtol=1e-5)   # the training path (torch.cat)


@pytest.mark.parametrize('case', list(SEEDED))
def test_seeded_construction_is_unchanged(case):
    torch.manual_seed(0)
    m = perturb(create_unet_model('resnet18', 3, 64, pretrained=False, **SEEDED[case]))
    with torch.no_grad(): got = m(inputs()[1])
    torch.testing.assert_close(got, REF[f'seeded_{case}/out/0'], atol=1e-5, rtol=1e-5)


def test_first_release_save_model_folder_loads():
    m = load_model(HERE/'saved_v0')
    io = load_file(str(HERE/'saved_v0_io.safetensors'))
    with torch.no_grad(): torch.testing.assert_close(m(io['input']), io['output'], atol=1e-5, rtol=1e-5)
    assert m.config['codes'] == ['bg', 'a', 'b', 'c'] and m.config['stats'][1] == [0.2, 0.2, 0.25]
