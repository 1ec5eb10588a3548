"""Benchmark image restoration on the CPU: ×2 super-resolution and de-JPEG, after a short training from scratch.

    python bench/restore.py             # the full run: 400 generated images, ≤ 10 min of training per task
    python bench/restore.py --quick     # a smoke test: a few images, one epoch, seconds

Clean images are generated offline (`make_clean_images`: crops of the photos shipped with scikit-learn and matplotlib,
and synthetic street scenes), into a temporary folder: training images from one part of each photo and fresh scene
seeds, held-out images from the other part and other seeds. They are degraded with `Downscale(2)` (bilinear, ×2) and
with `JPEG(q)`, `q` drawn per image. For each task a `restoration_learner` (no pretrained weights: they cannot be
downloaded offline; L1 loss, since the VGG feature loss needs them too) is trained with `fit_one_cycle` on `crop`-pixel
inputs (`--schedule time`, the default: one cycle spread over 570 s of training, validation excluded, so the
learning rate anneals fully on a fast or a slow machine), then every held-out image is restored whole with `restore_image` and scored against its target in 8-bit
pixels: PSNR, and SSIM with an 11×11 Gaussian window (σ = 1.5); `psnr_model_tta` also averages the 4 flips. The model always sees inputs of the training size: the
×2 inputs are `crop` pixels whole, and a de-JPEG image goes through `predict_tiled` windows of `crop` pixels (a U-Net
trained on small crops, whose deepest maps are then 2×2, does not generalise to other sizes). The baseline is the
degraded input itself, upsampled bicubically for super-resolution. The encoder is regnet_x_400mf: with resnet34 the
model is 3× costlier per image and, in the same ten minutes, gained +1.2 dB (×2, 4 epochs) and +0.6 dB (de-JPEG,
q 10-40, 6 epochs) in our runs. Prints one JSON object."""
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path


def pixels(img):
    import numpy as np, torch
    return torch.from_numpy(np.asarray(img, dtype=np.float64) / 255).permute(2, 0, 1)[None]


def scores(pred, targ):
    from unet_fastai.restoration.metrics import psnr, ssim
    return psnr(pred, targ).item(), ssim(pred, targ).item()


def run_task(name, tfm, upscale, a, root, log):
    from functools import partial
    import numpy as np, torch
    from PIL import Image
    from fastai.vision.all import set_seed, CancelFitException, Callback, Adam
    from unet_fastai.restoration.degrade import crappify_folder
    from unet_fastai.restoration.data import restoration_dls
    from unet_fastai.restoration.learner import restoration_learner, restore_image
    from unet_fastai.restoration.metrics import upsample_to
    from unet_fastai.learner import cpu_has_bf16

    lr_dir = root/f'lr_{name}'
    crappify_folder(root/'hr', lr_dir, tfm, n_workers=a.workers, seed=a.seed, progress=False)
    set_seed(a.seed)
    jpeg = 'JPEG' in repr(tfm)
    crop, bs, epochs = (a.crop_jpeg, a.bs_jpeg, a.epochs_jpeg) if jpeg else (a.crop, a.bs, a.epochs)
    dls = restoration_dls(lr_dir, root/'hr', size=crop, bs=bs, upscale=upscale, num_workers=0,
                          align=16 if jpeg else 1)                               # crops keep the JPEG block grid

    class Budget(Callback):
        """Stop once `a.budget` seconds of training (validation excluded) are spent. With `--schedule time`, the one-cycle
        schedule also runs over that time instead of over a number of epochs: its position is the fraction of the
        budget spent, so the learning rate anneals fully however fast the machine is."""
        order = 50                                                        # before ParamScheduler (60) sets the lr
        def before_fit(self): self.spent, self.t0, self.steps = 0., time.perf_counter(), 0
        def before_validate(self): self.spent += time.perf_counter() - self.t0
        def after_validate(self): self.t0 = time.perf_counter()
        def elapsed(self): return self.spent + time.perf_counter() - self.t0
        def before_batch(self):
            if self.training and a.schedule == 'time': self.learn.pct_train = min(self.elapsed() / a.budget, 1 - 1e-6)
        def after_batch(self):
            if not self.training: return
            self.steps += 1
            if self.elapsed() > a.budget:
                self.learn.over_budget = a.schedule != 'time'; raise CancelFitException()
        def after_fit(self): self.learn.train_time, self.learn.steps = self.elapsed(), self.steps

    class Log(Callback):
        "With -v: each epoch's losses and metrics on stderr."
        order = 90
        def after_epoch(self):
            log(f'{name} epoch {self.epoch}: ' + ' '.join(f'{n}={v:.4f}' for n, v in
                zip(self.recorder.metric_names[1:-1], self.recorder.log[1:]) if isinstance(v, float)))

    bf16 = cpu_has_bf16() and not a.no_bf16
    learn = restoration_learner(dls, a.arch, loss=a.loss, pretrained=False, bf16=bf16, residual=not a.no_residual,
                                opt_func=partial(Adam, eps=a.eps),
                                cbs=[Budget(), Log()] if a.verbose else [Budget()])
    learn.over_budget = False
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(10_000 if a.schedule == 'time' else epochs, a.lr, pct_start=a.pct_start)
    train_s = learn.train_time

    inp, out, out_tta = [], [], []
    t = time.perf_counter()
    for f in sorted((root/'hr'/'valid').iterdir()):
        hr = pixels(Image.open(f).convert('RGB'))
        lr_img = Image.open(next(lr_dir.glob(f'valid/{f.stem}.*'))).convert('RGB')
        x = upsample_to(pixels(lr_img), hr.shape[-2:])            # bicubic for super-resolution
        inp.append(scores((x * 255).round() / 255, hr))
        tiles = dict(tile=crop, overlap=0.5, align=16 if jpeg else None) if upscale == 1 else dict(tile=None)
        out.append(scores(pixels(restore_image(learn, lr_img, bs=16, **tiles)), hr))
        if not a.no_tta: out_tta.append(scores(pixels(restore_image(learn, lr_img, bs=16, tta=True, **tiles)), hr))
    eval_s = time.perf_counter() - t
    if a.out: torch.save(learn.model.state_dict(), root/f'model_{name}.pth')
    inp, out, out_tta = np.array(inp), np.array(out), np.array(out_tta)
    res = dict(degradation=repr(tfm), upscale=upscale, crop=crop, bs=bs, schedule=a.schedule,
               epochs=round(learn.steps / len(dls.train), 2), steps=learn.steps,
               baseline='bicubic' if upscale > 1 else 'input',
               psnr_input=round(float(inp[:, 0].mean()), 3), ssim_input=round(float(inp[:, 1].mean()), 4),
               psnr_model=round(float(out[:, 0].mean()), 3), ssim_model=round(float(out[:, 1].mean()), 4),
               gain_db=round(float(out[:, 0].mean() - inp[:, 0].mean()), 3),
               images_improved=int((out[:, 0] > inp[:, 0]).sum()), n_valid=len(out),
               **(dict(psnr_model_tta=round(float(out_tta[:, 0].mean()), 3), ssim_model_tta=round(float(out_tta[:, 1].mean()), 4))
                  if len(out_tta) else {}),
               train_s=round(train_s, 1), eval_s=round(eval_s, 1), bf16=bf16, over_budget=learn.over_budget,
               last_epoch={k: round(float(v), 4) for k, v in zip(learn.recorder.metric_names[1:-1],
                                                                 learn.recorder.values[-1] if learn.recorder.values else [])})
    log(f'{name}: {res}')
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='a smoke test: 4 training and 2 held-out images, 1 epoch')
    ap.add_argument('--n-train', type=int, default=400)
    ap.add_argument('--n-valid', type=int, default=48)
    ap.add_argument('--size', type=int, default=128, help='height and width of the clean (target) images')
    ap.add_argument('--crop', type=int, default=64, help='×2: input crop, pixels (64: the whole 64×64 input)')
    ap.add_argument('--bs', type=int, default=4, help='×2: batch size')
    ap.add_argument('--schedule', choices=('time', 'epochs'), default='time',
                    help="'time': one cycle over --budget seconds of training, whatever the speed; 'epochs': over --epochs")
    ap.add_argument('--epochs', type=int, default=10, help="×2: epochs (with --schedule epochs)")
    ap.add_argument('--crop-jpeg', type=int, default=64, help='de-JPEG: training crop and prediction window, pixels')
    ap.add_argument('--bs-jpeg', type=int, default=4, help='de-JPEG: batch size')
    ap.add_argument('--epochs-jpeg', type=int, default=15, help='de-JPEG: epochs (with --schedule epochs)')
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--pct-start', type=float, default=0.3)
    ap.add_argument('--eps', type=float, default=1e-5, help="Adam's eps (fastai's default: 1e-5)")
    ap.add_argument('--arch', default='regnet_x_400mf',
                    help='encoder (resnet34 learns less in the budget: its decoder costs 2.0 GMAC per 64×64 input, 3× more)')
    ap.add_argument('--loss', default='l1')
    ap.add_argument('--jpeg-q', type=int, nargs=2, default=(10, 30), help='JPEG quality range (inclusive)')
    ap.add_argument('--tasks', default='sr2,dejpeg')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--budget', type=float, default=570., help='seconds of training per task (validation excluded)')
    ap.add_argument('--threads', type=int, default=1,
                    help="torch threads (0: torch's default). 1 by default: on a shared machine, an OpenMP thread waiting "
                         "for a busy core slows training down several times")
    ap.add_argument('--workers', type=int, default=2, help='processes that degrade the images')
    ap.add_argument('--no-bf16', action='store_true', help='train in float32 even where bfloat16 is native')
    ap.add_argument('--no-residual', action='store_true', help='the plain DynamicUnet, without the input added back')
    ap.add_argument('--no-tta', action='store_true', help='skip the second evaluation, with 4-flip test-time augmentation')
    ap.add_argument('--out', help='keep the images in this folder (default: a temporary one)')
    ap.add_argument('-v', '--verbose', action='store_true')
    a = ap.parse_args()
    if a.quick:
        a.n_train, a.n_valid, a.size, a.arch = 4, 2, 64, 'resnet18'
        a.crop, a.bs, a.epochs, a.crop_jpeg, a.bs_jpeg, a.epochs_jpeg = 32, 4, 1, 32, 4, 1
        a.schedule = 'epochs'

    import warnings; warnings.simplefilter('ignore')
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from unet_fastai.restoration.degrade import Downscale, JPEG
    from unet_fastai.restoration.data import make_clean_images
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if a.verbose else (lambda m: None)

    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory() if a.out is None else None
    root = Path(a.out or tmp.name)
    make_clean_images(root/'hr'/'train', a.n_train, a.size, seed=a.seed, split='train')
    make_clean_images(root/'hr'/'valid', a.n_valid, a.size, seed=a.seed, split='valid')
    tasks = {'sr2': (Downscale(2), 2), 'dejpeg': (JPEG(tuple(a.jpeg_q)), 1)}
    out = dict(settings=dict(n_train=a.n_train, n_valid=a.n_valid, size=a.size,
                             lr=a.lr, pct_start=a.pct_start, schedule=a.schedule, adam_eps=a.eps, arch=a.arch, pretrained=False, loss=a.loss,
                             jpeg_q=list(a.jpeg_q), threads=a.threads,
                             residual=not a.no_residual, seed=a.seed, budget_s=a.budget, quick=a.quick),
               machine=dict(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                            processor=platform.processor() or platform.machine()),
               tasks={})
    for name in a.tasks.split(','):
        tfm, k = tasks[name]
        out['tasks'][name] = run_task(name, tfm, k, a, root, log)
    out['total_s'] = round(time.perf_counter() - t0, 1)
    if tmp is not None: tmp.cleanup()
    print(json.dumps(out))


if __name__ == '__main__':
    main()
