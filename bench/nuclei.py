"""Do the U-Net paper's border weight maps help? Train the same recipe with and without them on synthetic touching
nuclei (8 training images, as in the paper), from scratch on the CPU, and compare object-level F1 (IoU >= 0.5).

    python bench/nuclei.py                  # classic U-Net (base 16, depth 4), 12 epochs, seeds 0 and 1
    python bench/nuclei.py --quick          # a smoke run: 1 epoch, tiny images

Both recipes see the same images, the same augmentations (dihedral flips and `ElasticDeform`, seeded) and the same
initial weights; the only difference is the loss: `WeightedCrossEntropy` with the weight map from `WeightMapBlock`
(w0 = 10, σ = 5 px, balanced class weights), or the same cross-entropy with every weight 1. Validation images come
from other seeds. Object F1 counts a predicted connected component as found when it overlaps a true nucleus with
IoU >= 0.5 (one-to-one), so two touching nuclei predicted as one blob cost a miss and a false positive.
Prints one JSON object."""
import argparse, json, os, tempfile, time, warnings
warnings.filterwarnings('ignore')


def run(path, weight_maps, a, seed):
    import torch
    from fastai.learner import Learner
    from fastai.torch_core import set_seed
    from unet_fastai.segmentation.nuclei import nuclei_dls
    from unet_fastai.segmentation.losses import WeightedCrossEntropy
    from unet_fastai.segmentation.metrics import Dice, ObjectF1
    from unet_fastai.learner import AutocastBF16, cpu_has_bf16
    dls = nuclei_dls(path, bs=a.bs, weight_maps=weight_maps, repeat=a.repeat, seed=seed, num_workers=0)
    set_seed(seed, reproducible=True)
    if a.arch == 'classic':
        from unet_fastai.models.classic import UNet
        model = UNet(3, 2, base=a.base, depth=a.depth)
    else:
        from unet_fastai.models import create_unet_model
        model = create_unet_model(a.arch, 2, dls.one_batch()[0].shape[-2:], pretrained=False)
    cbs = [AutocastBF16()] if a.bf16 and cpu_has_bf16() else []
    learn = Learner(dls, model, loss_func=WeightedCrossEntropy(), cbs=cbs,
                    metrics=[Dice(include_background=False), ObjectF1(iou_thresh=0.5)])
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(a.epochs, a.lr)
        secs = time.perf_counter() - t
        _, dice, f1 = learn.validate()
    return dict(object_f1=round(float(f1), 4), dice=round(float(dice), 4), train_s=round(secs, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--epochs', type=int, default=12)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--bs', type=int, default=8)
    ap.add_argument('--repeat', type=int, default=8, help='copies of each training image per epoch')
    ap.add_argument('--n-train', type=int, default=8)
    ap.add_argument('--n-valid', type=int, default=16)
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--arch', default='classic', help="'classic' (the paper's UNet) or an encoder name, e.g. resnet18")
    ap.add_argument('--base', type=int, default=16)
    ap.add_argument('--depth', type=int, default=4)
    ap.add_argument('--seeds', default='0,1')
    ap.add_argument('--no-bf16', dest='bf16', action='store_false')
    ap.add_argument('--quick', action='store_true', help='1 epoch on 2+2 images of 64 px: a smoke test')
    a = ap.parse_args()
    if a.quick: a.epochs, a.n_train, a.n_valid, a.size, a.repeat, a.seeds, a.bs = 1, 2, 2, 64, 2, '0', 4
    from unet_fastai.segmentation.nuclei import make_synth_nuclei
    out = dict(settings={k: v for k, v in vars(a).items()}, cpu_count=os.cpu_count(), runs=[])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = make_synth_nuclei(d, n_train=a.n_train, n_valid=a.n_valid, size=(a.size, a.size), seed=0)
        for seed in map(int, a.seeds.split(',')):
            for wm in (False, True):
                r = run(path, wm, a, seed)
                out['runs'].append(dict(seed=seed, weight_maps=wm, **r))
    for wm in (False, True):
        rs = [r for r in out['runs'] if r['weight_maps'] == wm]
        out['with' if wm else 'without'] = {k: round(sum(r[k] for r in rs)/len(rs), 4) for k in ('object_f1', 'dice', 'train_s')}
    out['object_f1_gain'] = round(out['with']['object_f1'] - out['without']['object_f1'], 4)
    out['total_s'] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == '__main__': main()
