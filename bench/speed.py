"""Training and inference speed of the resnet34 U-Net on the CPU: unet_fastai against fastai 2.8's own DynamicUnet
(the same architecture) and segmentation_models_pytorch's `Unet('resnet34')`, measured side by side in one process.

    python bench/speed.py                      # 360×480, batch 4, 12 classes, 5 timed steps per method
    python bench/speed.py --size 96 128 --steps 2 --warmup 1   # a quick run

Methods (all from scratch weights, 12 classes):
- `fastai`: `fastai.vision.learner.create_unet_model(resnet34, 12, size, pretrained=False)`, as fastai trains it by
  default (float32, contiguous NCHW; `Learner.get_preds` predicts under `torch.no_grad`);
- `unet_fastai`: `unet_fastai.models.create_unet_model('resnet34', 12, size)`, as `unet_learner` trains it by default
  (float32, channels-last through fastai's `ChannelsLast` callback) and as `predict_tiled`/the CLI predict
  (a copy with BatchNorm folded into the convs, `fuse_bn`, channels-last, under `torch.inference_mode`);
- `unet_fastai_bf16`: the same with bfloat16 autocast (`AutocastBF16`, what `unet-fastai train` uses on a CPU with
  native bf16), reported separately: it changes the arithmetic;
- `smp`: `segmentation_models_pytorch.Unet('resnet34', encoder_weights=None, classes=12)` (if installed), fed the
  input padded to a multiple of 32 as it requires.

On a GPU (`--device cuda`, batch 8 by default there) the methods are the same models in float32 (cuDNN's default
TF32 convolutions, as fastai trains by default), with bfloat16 autocast (`_bf16`), and with float16 autocast and a
`GradScaler` (`_fp16`, what fastai's `to_fp16` does); peak memory is `torch.cuda.max_memory_allocated` over a
training step, and steps are timed with a synchronize before reading the clock.

A training step is forward, cross-entropy, backward and an Adam step. After `--warmup` steps of each method the
methods take turns, one step at a time, for `--steps` rounds: a background load slows all of them alike. Peak RSS is
measured in a fresh subprocess per method (a process's peak cannot be reset). GMAC per image come from torch's
FlopCounterMode on one image. Prints one JSON object."""
import argparse, json, os, resource, statistics, subprocess, sys, time, warnings
warnings.filterwarnings('ignore')
import torch, torch.nn as nn, torch.nn.functional as F

METHODS = ('fastai', 'unet_fastai', 'unet_fastai_bf16', 'smp')
GPU_METHODS = ('fastai', 'fastai_bf16', 'fastai_fp16', 'unet_fastai', 'unet_fastai_bf16', 'unet_fastai_fp16',
               'smp', 'smp_bf16')


def split_method(method):
    "'unet_fastai_bf16' -> ('unet_fastai', 'bf16'); 'fastai' -> ('fastai', 'fp32')."
    for p in ('bf16', 'fp16'):
        if method.endswith('_' + p): return method[:-len(p)-1], p
    return method, 'fp32'


def build(method, size, n_out=12):
    torch.manual_seed(0)
    method, prec = split_method(method)
    o = dict(prec=prec)
    if method == 'fastai':
        from fastai.vision.learner import create_unet_model
        from torchvision.models import resnet34
        return create_unet_model(resnet34, n_out, size, pretrained=False), o
    if method.startswith('unet_fastai'):
        from unet_fastai.models import create_unet_model
        m = create_unet_model('resnet34', n_out, size, pretrained=False).to(memory_format=torch.channels_last)
        return m, dict(o, cl=True)
    if method == 'smp':
        import segmentation_models_pytorch as smp
        return smp.Unet('resnet34', encoder_weights=None, classes=n_out), dict(o, pad32=True)
    raise ValueError(method)


def prep(x, o):
    if o.get('pad32'):
        h, w = x.shape[-2:]
        ph, pw = -h % 32, -w % 32
        x = F.pad(x, [pw//2, pw - pw//2, ph//2, ph - ph//2], mode='reflect')
    return x.contiguous(memory_format=torch.channels_last) if o.get('cl') else x


def crop(y, h, w):
    top, left = (y.shape[-2] - h)//2, (y.shape[-1] - w)//2
    return y[..., top:top+h, left:left+w]


class Runner:
    def __init__(self, method, a):
        self.method, self.a = method, a
        self.dev = torch.device(a.device)
        self.model, self.o = build(method, tuple(a.size))
        self.model.to(self.dev)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(a.bs, 3, *a.size, generator=g).to(self.dev)
        self.y = torch.randint(0, 12, (a.bs, *a.size), generator=g).to(self.dev)
        prec = self.o['prec']
        self.amp = dict(device_type=self.dev.type, enabled=prec != 'fp32',
                        dtype=torch.float16 if prec == 'fp16' else torch.bfloat16)
        self.scaler = torch.amp.GradScaler(self.dev.type) if prec == 'fp16' else None

    def sync(self):
        if self.dev.type == 'cuda': torch.cuda.synchronize(self.dev)

    def train_step(self):
        m = self.model.train()
        self.sync(); t = time.perf_counter()
        with torch.autocast(**self.amp):
            out = crop(m(prep(self.x, self.o)), *self.a.size)
        loss = F.cross_entropy(out.float(), self.y)
        if self.scaler is None: loss.backward(); self.opt.step()
        else: self.scaler.scale(loss).backward(); self.scaler.step(self.opt); self.scaler.update()
        self.opt.zero_grad()
        self.sync()
        return time.perf_counter() - t

    def infer_model(self):
        "What predicts: `predict_tiled`'s BatchNorm-folded copy for unet_fastai (made after training), else the model."
        if split_method(self.method)[0] != 'unet_fastai': return self.model.eval()
        if getattr(self, '_fused', None) is None:
            from unet_fastai.inference.fold import inference_model
            self._fused = inference_model(self.model)
        return self._fused

    def infer_step(self):
        m = self.infer_model()
        ctx = torch.no_grad() if split_method(self.method)[0] == 'fastai' else torch.inference_mode()
        self.sync(); t = time.perf_counter()
        with ctx, torch.autocast(**self.amp):
            out = crop(m(prep(self.x, self.o)), *self.a.size).float().softmax(1)
        self.sync()
        return time.perf_counter() - t

    def gmac(self):
        from torch.utils.flop_counter import FlopCounterMode
        fc = FlopCounterMode(display=False)
        with fc, torch.no_grad(): self.model.eval()(prep(self.x[:1], self.o).float())
        return fc.get_total_flops()/2/1e9


def peak_rss_mb():
    "This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent at fork)."
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return round(int(line.split()[1])/1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)


def rss_worker(a):
    r = Runner(a.worker, a)
    for _ in range(a.warmup + 2): r.train_step()
    res = dict(peak_rss_mb=peak_rss_mb())
    if r.dev.type == 'cuda': res['peak_gpu_mb'] = round(torch.cuda.max_memory_allocated(r.dev)/2**20)
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=int, nargs=2, default=[360, 480])
    ap.add_argument('--bs', type=int, default=None, help='batch size (default: 4 on the CPU, 8 on a GPU)')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: the default)')
    ap.add_argument('--methods', default=None, help='comma-separated (default: ' + ','.join(METHODS) + ' on the CPU, '
                    + ','.join(GPU_METHODS) + ' on a GPU)')
    ap.add_argument('--no-rss', dest='rss', action='store_false')
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    a = ap.parse_args()
    gpu = a.device.startswith('cuda')
    if gpu and not torch.cuda.is_available(): ap.error(f"--device {a.device}: torch sees no CUDA GPU")
    if a.bs is None: a.bs = 8 if gpu else 4
    if a.methods is None: a.methods = ','.join(GPU_METHODS if gpu else METHODS)
    if a.threads: torch.set_num_threads(a.threads)
    if a.worker: return rss_worker(a)
    import importlib.util
    methods = [m for m in a.methods.split(',')
               if not m.startswith('smp') or importlib.util.find_spec('segmentation_models_pytorch')]
    out = dict(size=a.size, bs=a.bs, steps=a.steps, warmup=a.warmup, threads=torch.get_num_threads(),
               cpu_count=os.cpu_count(), torch=torch.__version__, device=a.device, results={})
    if gpu: out.update(gpu=torch.cuda.get_device_name(), cudnn_tf32=torch.backends.cudnn.allow_tf32,
                       cudnn_benchmark=torch.backends.cudnn.benchmark)
    runners = {m: Runner(m, a) for m in methods}
    for m, r in runners.items():
        out['results'][m] = dict(params=sum(p.numel() for p in r.model.parameters()), gmac_per_img=round(r.gmac(), 2))
    for kind in ('train', 'infer'):
        times = {m: [] for m in methods}
        for m, r in runners.items():
            for _ in range(a.warmup): getattr(r, f'{kind}_step')()
        for _ in range(a.steps):
            for m, r in runners.items(): times[m].append(getattr(r, f'{kind}_step')())
        for m in methods:
            med = statistics.median(times[m]); res = out['results'][m]
            res[f'{kind}_img_s'] = round(a.bs/med, 3)
            res[f'{kind}_step_s'] = [round(t, 3) for t in times[m]]
            mult = 3 if kind == 'train' else 1           # backward ≈ 2× forward
            res[f'{kind}_gflop_s'] = round(2*res['gmac_per_img']*mult*a.bs/med, 1)
    del runners
    if a.rss:
        for m in methods:
            cmd = [sys.executable, __file__, '--worker', m, '--size', *map(str, a.size), '--bs', str(a.bs),
                   '--warmup', str(a.warmup), '--threads', str(a.threads), '--device', a.device]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode: out['results'][m]['train_peak_rss_mb'] = f'failed: {r.stderr.strip()[-300:]}'; continue
            peaks = json.loads(r.stdout.strip().splitlines()[-1])
            if gpu: out['results'][m]['train_peak_gpu_mb'] = peaks['peak_gpu_mb']
            else: out['results'][m]['train_peak_rss_mb'] = peaks['peak_rss_mb']
    r = out['results']
    mem = 'train_peak_gpu_mb' if gpu else 'train_peak_rss_mb'
    for m in methods:                    # each against fastai at the same precision (float32 if fastai has no such row)
        name, prec = split_method(m)
        base = f'fastai_{prec}' if f'fastai_{prec}' in r else 'fastai'
        if name == 'fastai' or base not in r: continue
        cmp = out[f'{m}_vs_{base}'] = dict(train=round(r[m]['train_img_s']/r[base]['train_img_s'], 3),
                                          infer=round(r[m]['infer_img_s']/r[base]['infer_img_s'], 3))
        if isinstance(r[m].get(mem), int) and isinstance(r[base].get(mem), int):
            cmp['peak_gpu_mem' if gpu else 'peak_rss'] = round(r[m][mem]/r[base][mem], 3)
    print(json.dumps(out, indent=1))


if __name__ == '__main__': main()
