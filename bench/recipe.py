"""Accuracy per compute (issue #7): the fastai-identical resnet34 DynamicUnet, each candidate decoder change alone, the
`preset='fast'` U-Net and segmentation_models_pytorch's `Unet('resnet34')`, trained one after another in one process
on the same synthetic CamVid-like scenes, with the same recipe.

    python bench/recipe.py                  # the full ablation: 300 train / 100 valid images at 96×128, 3 epochs
    python bench/recipe.py --quick          # a smoke run: 1 epoch on 16 images (checks that every row is produced)

Recipe, the same for every row: resnet34 from scratch (`pretrained=False`), `fit_one_cycle(epochs, 2e-3)`, batch size
8, fastai's `Adam` and defaults, the default `camvid_dls` augmentation, the same seed before each row, the same
precision (bfloat16 autocast, `AutocastBF16`, where the CPU has native bf16; float32 otherwise) and channels-last.
`smp` is `segmentation_models_pytorch.Unet('resnet34', encoder_weights=None, classes=12)` in a plain fastai `Learner`
with the same loss (cross-entropy ignoring Void), optimiser, callbacks and schedule; it is skipped, with the reason, if
the package is not installed.

Columns: `miou` (mean IoU over the 11 classes, Void ignored) and `pixel_accuracy` (Void excluded), both exact over the
whole validation set after training; `train_s`, the seconds spent in the training phase of `fit_one_cycle` (validation
is not run during the fit, only once at the end, and not timed); `gmac_per_img` at the training size (torch's
FlopCounterMode, float32, one image); `params`. Prints one JSON object."""
import argparse, datetime, importlib.util, json, math, os, platform, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import torch, torch.nn as nn, torch.nn.functional as F

# name -> options passed to `unet_learner` (None: the smp row)
ROWS = {
    'default':     {},                                   # fastai's DynamicUnet, exactly
    'norm_batch':  dict(norm_type='Batch'),              # BatchNorm in the decoder convs
    'pow2':        dict(decoder_channels='pow2'),        # widths rounded down to powers of two
    'narrow':      dict(decoder_channels='narrow'),      # smp's widths: 256, 128, 64, 32
    'tapered':     dict(decoder_channels='tapered'),     # 128, 64, 64, 48: wider at the finest skips, narrower deep down
    'middle_slim': dict(middle='slim'),                  # one ni -> ni middle conv instead of ni -> 2ni -> ni
    'middle_none': dict(middle='none'),                  # no middle conv
    'bottle':      dict(bottle=True),                    # the last-cross ResBlock at half width
    'head_light':  dict(head='light'),                   # full resolution at half the width
    'no_skip_bn':  dict(skip_bn=False),                  # the skips unnormalised (fastai: BatchNorm, then ReLU)
    'preset_fast': dict(preset='fast'),                  # the preset
    'smp':         None,
}


class Pad32(nn.Module):
    "smp's U-Net needs sides that are multiples of 32: mirror-pad, run, crop back (a no-op at 96×128)."
    def __init__(self, model): super().__init__(); self.model = model
    def forward(self, x):
        h, w = x.shape[-2:]
        ph, pw = -h % 32, -w % 32
        if ph or pw: x = F.pad(x, [pw//2, pw - pw//2, ph//2, ph - ph//2], mode='reflect')
        y = self.model(x)
        return y[..., ph//2:ph//2+h, pw//2:pw//2+w]


def gmac_per_img(model, size):
    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    model.eval()
    dev = next(model.parameters()).device
    with fc, torch.no_grad(): model(torch.zeros(1, 3, *size, device=dev))
    return fc.get_total_flops() / 2 / 1e9


def make_learner(name, dls, cbs):
    from fastai.vision.all import Learner, CrossEntropyLossFlat
    from fastai.callback.channelslast import ChannelsLast
    from unet_fastai.learner import unet_learner
    from unet_fastai.segmentation.data import camvid_metrics
    opts = ROWS[name]
    if opts is not None:
        return unet_learner(dls, 'resnet34', pretrained=False, metrics=camvid_metrics(dls), cbs=cbs, **opts)
    import segmentation_models_pytorch as smp
    model = Pad32(smp.Unet('resnet34', encoder_weights=None, classes=dls.c))
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(axis=1, ignore_index=dls.void_code),
                   metrics=camvid_metrics(dls), cbs=cbs + [ChannelsLast()])


def run_row(name, a, path, precision):
    from fastai.vision.all import Callback, CancelValidException, set_seed
    from unet_fastai.segmentation.data import camvid_dls
    from unet_fastai.learner import AutocastBF16

    class TrainTimer(Callback):
        "Seconds in the training phase of each epoch; validation is skipped during the fit (run once at the end)."
        order = 0
        def before_fit(self): self.secs = 0.
        def before_train(self): self.t0 = time.perf_counter()
        def after_train(self): self.secs += time.perf_counter() - self.t0
        def before_validate(self): raise CancelValidException()

    set_seed(a.seed, reproducible=True)
    dls = camvid_dls(path, bs=a.bs, seed=a.seed, num_workers=0)
    cbs = [AutocastBF16()] if precision == 'bf16' else []
    learn = make_learner(name, dls, cbs)
    model = learn.model
    row = dict(options=ROWS[name] if ROWS[name] is not None else dict(smp="Unet('resnet34', encoder_weights=None)"),
               params=sum(p.numel() for p in model.parameters()),
               gmac_per_img=round(gmac_per_img(model, a.size), 3))
    if name != 'smp': row['config'] = {k: v for k, v in model.config.items() if k not in ('arch', 'n_out', 'img_size', 'n_in')}
    timer = TrainTimer()
    with learn.no_logging(), learn.no_bar():
        t0 = time.perf_counter()
        learn.fit_one_cycle(a.epochs, a.lr, cbs=timer)
        row['fit_s'] = round(time.perf_counter() - t0, 2)
        row['train_s'] = round(timer.secs, 2)
        t0 = time.perf_counter()
        loss, acc, miou = learn.validate()
        row['valid_s'] = round(time.perf_counter() - t0, 2)
    row.update(miou=round(float(miou), 4), pixel_accuracy=round(float(acc), 4), valid_loss=round(float(loss), 4))
    return row


def _cpu_name():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='1 epoch, 16 train and 16 valid images (a smoke test)')
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--n-train', type=int, default=300)
    ap.add_argument('--n-valid', type=int, default=100)
    ap.add_argument('--size', type=int, nargs=2, default=[96, 128])
    ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--threads', type=int, default=1, help='torch threads (0: torch\'s default)')
    ap.add_argument('--precision', choices=('auto', 'bf16', 'fp32'), default='auto',
                    help="'auto': bf16 autocast where the CPU has native bf16 (or on a GPU), else fp32")
    ap.add_argument('--rows', default=','.join(ROWS), help='comma-separated subset of ' + ','.join(ROWS))
    ap.add_argument('--data', default=None, help='folder for the synthetic data (default: a cache in the temp dir)')
    a = ap.parse_args(argv)
    if a.quick: a.epochs, a.n_train, a.n_valid = 1, 16, 16
    if a.threads: torch.set_num_threads(a.threads)
    rows = a.rows.split(',')
    bad = [r for r in rows if r not in ROWS]
    if bad: ap.error(f"--rows: unknown {bad}; expected names from {list(ROWS)}")
    from unet_fastai.learner import cpu_has_bf16
    from unet_fastai.segmentation.synth import make_synth_camvid
    import fastai
    gpu = torch.cuda.is_available()                  # fastai's DataLoaders and Learner then run there
    precision = a.precision if a.precision != 'auto' else ('bf16' if gpu or cpu_has_bf16() else 'fp32')
    path = Path(a.data or Path(tempfile.gettempdir())/f'unet_fastai_recipe_{a.n_train}_{a.n_valid}_{a.size[0]}x{a.size[1]}')
    make_synth_camvid(path, n_train=a.n_train, n_valid=a.n_valid, size=tuple(a.size), seed=a.seed)
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
               machine=f'{_cpu_name()}, {os.cpu_count()} cores',
               threads=torch.get_num_threads(), precision=precision,
               device=torch.cuda.get_device_name() if gpu else 'cpu', channels_last=True,
               epochs=a.epochs, n_train=a.n_train, n_valid=a.n_valid, size=a.size, bs=a.bs, lr=a.lr, seed=a.seed,
               arch='resnet34', pretrained=False, schedule='fit_one_cycle', quick=a.quick,
               torch=torch.__version__, fastai=fastai.__version__, rows={}, skipped={})
    has_smp = importlib.util.find_spec('segmentation_models_pytorch') is not None
    for name in rows:
        if name == 'smp' and not has_smp:
            out['skipped']['smp'] = 'segmentation_models_pytorch is not installed (pip install segmentation-models-pytorch)'
            continue
        out['rows'][name] = run_row(name, a, path, precision)
        print(f"{name}: {out['rows'][name]}", file=sys.stderr, flush=True)
    r = out['rows']
    if 'preset_fast' in r and 'smp' in r:
        p, s = r['preset_fast'], r['smp']
        ratio = p['train_s'] / s['train_s']
        out['preset_vs_smp'] = dict(miou_diff=round(p['miou'] - s['miou'], 4), train_s_ratio=round(ratio, 3),
                                    accepted=bool(p['miou'] >= s['miou'] and ratio <= 1.1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == '__main__': main()
