"""Distributed training on CPUs: `unet-fastai train` under `torchrun --nproc_per_node 2` (gloo backend) goes through
fastai's `distrib_ctx` (DDP via Hugging Face Accelerate). The ranks must end with identical weights, each must train
on its own half of the data (effective batch = bs × 2), and the metrics must be those of the whole validation set.

Needs `accelerate` (fastai's distributed module cannot be imported without it): skipped when it is not installed.
Run as a script, this file is one rank of that run (see the bottom)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch
import torch.nn as nn

N_TRAIN, N_VALID, BS = 16, 7, 4          # 7 validation images: padded to 8 over 2 ranks, and unpadded in the metrics


def tiny(weights=None, **kwargs):
    "A 3-level encoder, so that 2 processes train in seconds on a CPU; the U-Net is built on it as on a resnet."
    def blk(i, o): return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
    return nn.Sequential(blk(3, 8), blk(8, 16), blk(16, 32), nn.AdaptiveAvgPool2d(1))


def _register():
    from unet_fastai.models import register_encoder
    register_encoder('tiny_ddp', tiny, cut=-1, split=lambda enc: [enc])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("accelerate", reason="distributed training needs Hugging Face Accelerate")
    import unet_fastai
    from unet_fastai.segmentation.synth import make_synth_camvid
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_synth_camvid(tmp/"camvid", n_train=N_TRAIN, n_valid=N_VALID, size=(64, 96))
    root = str(Path(unet_fastai.__file__).resolve().parent.parent)      # the package under test, in the subprocesses too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"): env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        __file__, str(data), str(tmp)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    ranks = [json.loads((tmp/f"rank{i}.json").read_text()) for i in range(2)]
    weights = [torch.load(tmp/f"rank{i}.pth") for i in range(2)]
    return dict(tmp=tmp, data=data, out=tmp/"run", stdout=r.stdout, ranks=ranks, weights=weights)


def test_fastai_distributed_path(run):
    for i, o in enumerate(run["ranks"]):
        assert o["rc"] == 0 and o["rank"] == i and o["world_size"] == 2
        assert o["model"] == "DistributedDataParallel" and o["dl"] == "DistributedDL"   # fastai's DistributedTrainer
        assert o["backend"] == "gloo"


def test_ranks_end_with_identical_weights(run):
    w0, w1 = run["weights"]
    assert w0.keys() == w1.keys()
    assert any("running_mean" in k for k in w0)                 # BatchNorm statistics are compared too
    for k in w0: assert torch.equal(w0[k], w1[k]), k
    from unet_fastai.inference.io import load_model
    _register()
    exported = load_model(run["out"]/"model").state_dict()        # what rank 0 exported is that model
    for k in w0: assert torch.equal(exported[k], w0[k].contiguous()), k


def test_each_rank_trains_on_its_half(run):
    r0, r1 = run["ranks"]
    assert r0["n_images"] == r1["n_images"] == N_TRAIN // 2
    assert r0["batch_sizes"] == r1["batch_sizes"] == [BS]       # bs per rank: the effective batch is 2 × bs
    assert r0["n_batches"] == r1["n_batches"] == N_TRAIN // (2 * BS)
    assert not set(r0["idxs"]) & set(r1["idxs"])                   # disjoint halves ...
    assert sorted(r0["idxs"] + r1["idxs"]) == list(range(N_TRAIN))  # ... of the whole training set


def test_metrics_are_gathered_over_the_validation_set(run):
    r0, r1 = run["ranks"]
    assert r0["metrics"] == r1["metrics"]
    # a single process validating the final weights on all 7 images gets the same values
    from fastai.torch_core import set_seed
    from unet_fastai.segmentation.data import camvid_dls
    from unet_fastai.learner import unet_learner, AutocastBF16
    from unet_fastai.segmentation.data import camvid_metrics
    _register()
    dls = camvid_dls(run["data"], bs=BS, num_workers=0)
    learn = unet_learner(dls, "tiny_ddp", pretrained=False, metrics=camvid_metrics(dls))
    learn.model.load_state_dict(run["weights"][0]); learn.model.to(memory_format=torch.channels_last)   # as trained
    if r0["bf16"]: learn.add_cb(AutocastBF16())                    # as the run validated
    with learn.no_bar(): loss, acc, miou = learn.validate()
    assert len(dls.valid_ds) == N_VALID
    assert r0["metrics"]["acc_camvid"] == pytest.approx(acc, abs=1e-4)
    assert r0["metrics"]["miou"] == pytest.approx(miou, abs=1e-4)
    m = json.loads((run["out"]/"metrics.json").read_text())       # and the CLI reports them
    assert m["acc_camvid"] == pytest.approx(acc, abs=1e-4) and m["miou"] == pytest.approx(miou, abs=1e-4)


def test_only_rank0_writes(run):
    rows = (run["out"]/"metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,")               # header + one epoch, written once
    assert (run["out"]/"checkpoints"/"last.pth").exists()
    assert json.loads((run["out"]/"state.json").read_text())["epochs_done"] == 1
    assert sum(l.startswith("{") for l in run["stdout"].splitlines()) == 1   # one summary line, from rank 0
    assert not list(run["out"].rglob("*.tmp"))


def test_sync_bn_is_refused_on_cpu(run):
    for o in run["ranks"]:
        assert o["sync_bn_rc"] == 1
        assert "SyncBatchNorm does not run on cpu" in o["sync_bn_err"]


if __name__ == "__main__":      # one rank of the run above, started by torchrun
    import contextlib, io, warnings
    warnings.filterwarnings("ignore")
    from fastai.callback.core import Callback
    from fastai.torch_core import rank_distrib
    import unet_fastai.segmentation.train as T
    from unet_fastai.cli import main
    from unet_fastai.learner import cpu_has_bf16
    data, tmp = map(Path, sys.argv[1:3])
    _register()

    class Spy(Callback):
        "What this rank trained on: the indices its DataLoader drew, its batches and images."
        order = 20                                                    # after fastai's DistributedTrainer (11)
        def before_fit(self): self.idxs, self.sizes, self.n = [], [], 0
        def before_train(self):
            dl = self.learn.dl
            self.model, self.dl = type(self.learn.model).__name__, type(dl).__name__
            self.backend = torch.distributed.get_backend()
            if getattr(dl, "_spied", False): return
            orig, dl._spied = dl.get_idxs, True
            def get_idxs():
                idxs = orig(); self.idxs += list(idxs); return idxs
            dl.get_idxs = get_idxs
        def after_batch(self):
            if self.training: self.sizes.append(len(self.yb[0])); self.n += len(self.yb[0])

    spy, res = Spy(), {}
    def spied(*args, **kwargs):
        res["learn"] = T_train(*args, cbs=[spy], **kwargs)
        return res["learn"]
    T_train, T.train_segmentation = T.train_segmentation, spied
    args = ["train", "--data", str(data), "--out", str(tmp/"run"), "--arch", "tiny_ddp", "--epochs", "1",
            "--bs", str(BS), "--no-pretrained", "--no-progress"]
    rc = main(args)
    learn, r = res["learn"], rank_distrib()
    names = list(learn.recorder.metric_names)[1:-1]
    torch.save(learn.model.state_dict(), tmp/f"rank{r}.pth")
    err = io.StringIO()
    with contextlib.redirect_stderr(err): sync_bn_rc = main(args + ["--sync-bn", "--out", str(tmp/"run_sync_bn")])
    (tmp/f"rank{r}.json").write_text(json.dumps(dict(
        rc=rc, rank=r, world_size=int(os.environ["WORLD_SIZE"]), model=spy.model, dl=spy.dl, backend=spy.backend,
        idxs=spy.idxs, n_images=spy.n, batch_sizes=sorted(set(spy.sizes)), n_batches=len(spy.sizes),
        metrics={k: float(v) for k, v in zip(names, learn.recorder.log[1:len(names)+1])}, bf16=cpu_has_bf16(),
        sync_bn_rc=sync_bn_rc, sync_bn_err=err.getvalue())))
    sys.exit(rc)
