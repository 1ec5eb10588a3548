"""Variants of the fast preset (issue #7) over several seeds: mIoU only, one variant and seed per process, so many can
run side by side on one GPU. Each run is `bench/recipe.py`'s recipe (300/100 synthetic scenes at 96×128, resnet34 from
scratch, `fit_one_cycle(3, 2e-3)`, bs 8, bfloat16 autocast, channels-last) with the seed given.

    python bench/preset_search.py --data /tmp/synth_300_100                     # make the data once
    python bench/preset_search.py preset 42 --data /tmp/synth_300_100 --out runs.jsonl
    python bench/preset_search.py --summary runs.jsonl                          # mean mIoU and difference to smp per seed

Variants are `unet_learner` options, some with a change made after construction that is not an option of the library
(`no_logit_bn`, `head3x3`, `no_mid_bn`, `no_cat_relu`): those were tried and are kept so the table can be re-run.
Timings are not comparable across processes running side by side; `bench/recipe.py` measures time."""
import argparse, collections, json, os, statistics, sys, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
sys.path.insert(0, str(Path(__file__).parent))
import torch, torch.nn as nn
import recipe


def _conv_head(ks):
    def f(m):
        conv = m.head.final_conv[0]
        new = nn.Conv2d(conv.in_channels, conv.out_channels, ks, padding=ks//2, bias=True)
        nn.init.kaiming_normal_(new.weight); nn.init.zeros_(new.bias)
        m.head.final_conv = nn.Sequential(new)
    return f

def no_cat_relu(m):
    for b in m.decoder.blocks: b.relu = nn.Identity()

def no_mid_bn(m): m.decoder.bn = nn.Identity()

def no_middle(m): m.decoder.middle_conv = nn.Identity()   # as `middle='none'`, but built after the conv drew its init from
                                                 # the RNG: the round-3 rows that used it stay reproducible

F = dict(preset='fast', decoder_channels='narrow', middle='slim', head='light')   # the preset of rounds 1-3: narrow, slim middle, light head, BatchNorm, no skip BatchNorm
O = dict(F, skip_bn=True)                     # the preset as first built, with fastai's BatchNorm on the skips
VARIANTS = {   # name -> (unet_learner options, change after construction); None: smp's U-Net
    'smp': (None, None),
    'default': ({}, None),
    'preset': (F, None),
    'fast': (dict(preset='fast'), None),                                # `preset='fast'` as it is now (= t3)
    'old_preset': (O, None),
    # round 1: changes to the old preset, one at a time (3 seeds)
    'old_no_logit_bn': (O, _conv_head(1)),                        # final 1×1 conv without BatchNorm
    'old_head3x3': (O, _conv_head(3)),                            # final 3×3 conv without BatchNorm (as smp)
    'old_no_cat_relu': (O, no_cat_relu),                          # no ReLU after the concatenation
    'old_head_fastai': (dict(O, head='fastai'), None),
    'old_head_fastai_no_logit_bn': (dict(O, head='fastai'), _conv_head(1)),
    'old_middle_fastai': (dict(O, middle='fastai'), None),
    'old_no_norm': (dict(O, norm_type=None), None),
    'old_pow2': (dict(O, decoder_channels='pow2'), None),
    'old_w_wide': (dict(O, decoder_channels=[256, 128, 96, 64]), None),
    'narrow_batch': (dict(norm_type='Batch', decoder_channels='narrow'), None),
    'no_logit_bn': (F, _conv_head(1)),
    # round 2: changes to the preset (5 seeds)
    'no_mid_bn': (F, no_mid_bn),                                  # no BatchNorm on the encoder's output
    'head_fastai': (dict(F, head='fastai'), None),
    'w48': (dict(F, decoder_channels=[256, 128, 64, 48]), None),
    'w_mid': (dict(F, decoder_channels=[256, 128, 96, 32]), None),
    'w_wide': (dict(F, decoder_channels=[256, 128, 96, 64]), None),
    # round 3 (CPU): wider last blocks, paid for by dropping the middle conv
    'no_middle': (F, no_middle),
    'w48_no_middle': (dict(F, decoder_channels=[256, 128, 64, 48]), no_middle),
    'w64_no_middle': (dict(F, decoder_channels=[256, 128, 64, 64]), no_middle),
    'w_wide_no_middle': (dict(F, decoder_channels=[256, 128, 96, 64]), no_middle),
    'h24': (dict(F, head=24), None),                                  # the last cross wider only
    'w48_h16': (dict(F, decoder_channels=[256, 128, 64, 48], head=16), None),   # the last block wider only
    'w64_h16': (dict(F, decoder_channels=[256, 128, 64, 64], head=16), None),
    'w48_h16_no_middle': (dict(F, decoder_channels=[256, 128, 64, 48], head=16), no_middle),
    't1': (dict(F, middle='none', decoder_channels=[128, 96, 64, 48], head=16), None),   # tapered: narrower deep blocks
    't2': (dict(F, middle='none', decoder_channels=[128, 96, 64, 48]), None),   # the preset of session 5
    't3': (dict(F, middle='none', decoder_channels=[128, 64, 64, 48], head=16), None),   # the preset now (`preset='fast'`)
    # round 4 (CPU): the narrow head (`head=16`: a 16-channel last cross) and a narrower finest block, for time
    't4': (dict(F, middle='none', decoder_channels=[128, 64, 64, 32], head=16), None),
    't5': (dict(F, middle='none', decoder_channels=[128, 96, 64, 32], head=16), None),
}


def run(name, seed, data, epochs=3):
    opts, fix = VARIANTS[name]
    recipe.ROWS[name] = opts
    orig = recipe.make_learner
    def make_learner(n, dls, cbs):
        learn = orig(n, dls, cbs)
        if fix is not None: fix(learn.model); learn.model.to(dls.device); learn.create_opt()
        return learn
    recipe.make_learner = make_learner
    a = argparse.Namespace(seed=seed, bs=8, size=[96, 128], epochs=epochs, lr=2e-3)
    t = time.time()
    row = recipe.run_row(name, a, Path(data), 'bf16')
    row.pop('config', None); row.pop('options', None)
    row.update(variant=name, seed=seed, wall_s=round(time.time() - t, 1), device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')
    return row


def summary(path):
    d = collections.defaultdict(dict)
    for line in open(path): r = json.loads(line); d[r['variant']][r['seed']] = r
    smp = {s: r['miou'] for s, r in d.get('smp', {}).items()}
    res = {}
    for v, rs in d.items():
        diffs = [rs[s]['miou'] - smp[s] for s in rs if s in smp]
        res[v] = dict(seeds=sorted(rs), miou={s: rs[s]['miou'] for s in sorted(rs)},
                      mean_miou=round(statistics.mean(r['miou'] for r in rs.values()), 4),
                      mean_diff_vs_smp=round(statistics.mean(diffs), 4) if diffs else None,
                      seeds_at_or_above_smp=sum(x >= 0 for x in diffs) if diffs else None,
                      gmac_per_img=next(iter(rs.values()))['gmac_per_img'])
    return dict(sorted(res.items(), key=lambda kv: -kv[1]['mean_miou']))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('variant', nargs='?', choices=list(VARIANTS))
    ap.add_argument('seed', nargs='?', type=int, default=42)
    ap.add_argument('--data', default='/tmp/synth_300_100')
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--out', help='append the row as one JSON line to this file')
    ap.add_argument('--summary', help='summarise a JSON-lines file of runs')
    a = ap.parse_args(argv)
    if a.summary: return print(json.dumps(summary(a.summary), indent=1))
    if a.variant is None:
        from unet_fastai.segmentation.synth import make_synth_camvid
        return make_synth_camvid(Path(a.data), n_train=300, n_valid=100, size=(96, 128), seed=42)
    row = run(a.variant, a.seed, a.data, a.epochs)
    print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n')


if __name__ == '__main__': main()
