"""Benchmark `predict_tiled` on a large RGB image on the CPU, against MONAI's `sliding_window_inference` when installed.

    python bench/tiled.py               # 4096×4096, resnet34 DynamicUnet, 12 classes, tile 512, overlap 0.25, gaussian
    python bench/tiled.py --size 1024   # a quicker run

Methods: `unet_fastai` (class probabilities, as MONAI returns), `unet_fastai_labels` (`out='labels'`: the label map,
accumulated in a sliding band of rows), `monai` (`sliding_window_inference` as users call it) and `monai_cl` (the same,
with the model fed channels-last windows as `predict_tiled` does by default: the fair comparison of the tilers alone).

Each method runs in a fresh subprocess, so that the peak RSS (`ru_maxrss`) reported is that method's alone. Both
blend softmax probabilities with a Gaussian of σ = tile/8 and run `bs` windows at a time. `predict_tiled` takes the
`uint8` image and mirrors its borders (one probe window more); MONAI needs the float tensor of the whole image and
does not pad an image larger than the window. Prints one JSON object."""
import argparse, json, os, resource, subprocess, sys, time


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kilobytes


def worker(a):
    import numpy as np, torch
    from unet_fastai.models import create_unet_model
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = create_unet_model(a.arch, a.n_out, 64, pretrained=False).eval()
    img = np.random.default_rng(0).integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)
    res = dict(method=a.worker, rss_before_mb=round(rss_mb()))
    t = time.perf_counter()
    if a.worker.startswith('unet_fastai'):
        from unet_fastai.inference.tiled import predict_tiled
        out = 'labels' if a.worker.endswith('labels') else 'probs'
        p = predict_tiled(model, img, tile=a.tile, overlap=a.overlap, blend='gaussian', bs=a.bs, progress=False, out=out)
    else:
        from monai.inferers import sliding_window_inference
        cl = torch.channels_last if a.worker == 'monai_cl' else torch.contiguous_format
        with torch.inference_mode():
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div_(255)
            p = sliding_window_inference(x, (a.tile, a.tile), a.bs, lambda t: model(t.contiguous(memory_format=cl)).softmax(1),
                                         overlap=a.overlap, mode='gaussian', sigma_scale=0.125)[0]
    wall = time.perf_counter() - t
    # class frequencies of the predicted label map: comparable between probabilities and labels
    lbl = p if p.ndim == 2 else p.argmax(0)
    res.update(wall_s=round(wall, 2), peak_rss_mb=round(rss_mb()), mpx_per_s=round(a.size**2/1e6/wall, 4),
               shape=list(p.shape), class_freqs=[round(float(v), 5) for v in torch.bincount(lbl.flatten(), minlength=a.n_out)/lbl.numel()])
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=int, default=4096, help='image height and width')
    ap.add_argument('--tile', type=int, default=512)
    ap.add_argument('--overlap', type=float, default=0.25)
    ap.add_argument('--bs', type=int, default=4)
    ap.add_argument('--n-out', type=int, default=12)
    ap.add_argument('--arch', default='resnet34')
    ap.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    ap.add_argument('--methods', default='unet_fastai,unet_fastai_labels,monai,monai_cl')
    ap.add_argument('--worker', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker: return worker(a)

    import importlib.util
    out = dict(size=a.size, tile=a.tile, overlap=a.overlap, bs=a.bs, n_out=a.n_out, arch=a.arch, device='cpu',
               cpu_count=os.cpu_count(), results={})
    for m in a.methods.split(','):
        if m == 'monai' and importlib.util.find_spec('monai') is None:
            out['results'][m] = 'skipped: monai is not installed'
            continue
        cmd = [sys.executable, __file__, '--worker', m] + [f'--{k.replace("_", "-")}={v}' for k, v in vars(a).items()
                                                           if k not in ('worker', 'methods')]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: out['results'][m] = f'failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}'
        else: out['results'][m] = json.loads(r.stdout.strip().splitlines()[-1])
    r = out['results']
    for ours in ('unet_fastai', 'unet_fastai_labels'):
        for ref in ('monai', 'monai_cl'):
            if isinstance(r.get(ours), dict) and isinstance(r.get(ref), dict):
                out[f'{ours}_vs_{ref}'] = dict(
                    throughput_ratio=round(r[ref]['wall_s']/r[ours]['wall_s'], 3),
                    peak_rss_ratio=round(r[ours]['peak_rss_mb']/r[ref]['peak_rss_mb'], 3),
                    max_class_freq_diff=round(max(abs(x - y) for x, y in zip(r[ours]['class_freqs'], r[ref]['class_freqs'])), 5))
    print(json.dumps(out, indent=1))


if __name__ == '__main__': main()
