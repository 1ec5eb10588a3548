"""U-Net++ end to end with fastai: a deep-supervised `DynamicUnetPlusPlus` fits one epoch with the CamVid metrics,
freezes like `DynamicUnet`, predicts, pickles, scripts, and saves its recipe."""
import json
import matplotlib
matplotlib.use("Agg")
import pytest, torch
from fastai.learner import Learner, load_learner
from fastai.callback.core import Callback
from fastai.losses import CrossEntropyLossFlat
from safetensors.torch import load_file
from unet_fastai.segmentation.synth import make_synth_camvid
from unet_fastai.segmentation.data import camvid_dls
from unet_fastai.segmentation.data import camvid_metrics
from unet_fastai.learner import UnetSplitter
from unet_fastai.models import encoder_meta, DynamicUnetPlusPlus, DeepSupervisionLoss, create_unetpp_model
from unet_fastai.inference.export import export_torchscript
from unet_fastai.inference.io import save_model, load_model


class MainPred(Callback):
    "What `unet_learner` can add for `train_metrics`: after the loss, `learn.pred` is the main output only."
    order = 1
    def after_loss(self):
        if isinstance(self.pred, (tuple, list)): self.learn.pred = self.pred[0]


class PredSpy(Callback):
    "Records the type of `learn.pred` straight from the model, in training and in validation."
    order = 0
    def before_fit(self): self.seen = {True: set(), False: set()}
    def after_pred(self): self.seen[self.training].add(type(self.pred).__name__)


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    d = tmp_path_factory.mktemp("unetpp")
    dls = camvid_dls(make_synth_camvid(d/"camvid", n_train=8, n_valid=4, size=(64, 96)), bs=4, num_workers=0)
    model = create_unetpp_model("resnet18", dls.c, (64, 96), pretrained=False, deep_supervision=True)
    learn = Learner(dls, model, loss_func=DeepSupervisionLoss(CrossEntropyLossFlat(axis=1, ignore_index=dls.void_code)),
                    metrics=camvid_metrics(dls), splitter=UnetSplitter(encoder_meta("resnet18").split), path=d)
    spy = PredSpy()
    learn.recorder.train_metrics = True
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 3e-3, cbs=[MainPred(), spy])
    learn.spy_seen = spy.seen
    return learn


def test_fit_one_epoch_with_metrics(learn):
    names = learn.recorder.metric_names
    for n in ("train_loss", "valid_loss", "valid_acc_camvid", "valid_miou", "train_acc_camvid", "train_miou"):
        assert n in names, names
    vals = learn.recorder.values[-1]
    assert len(vals) == len(names) - 2 and all(torch.isfinite(torch.tensor(v)) for v in vals)
    # the model gives a tuple in training (fixed up by MainPred for train metrics) and a tensor in validation
    assert learn.spy_seen == {True: {"tuple"}, False: {"Tensor"}}


def test_freeze_keeps_batchnorm_trainable(learn):
    learn.freeze()
    try:
        enc_train = [n for n, p in learn.model.encoder.named_parameters() if p.requires_grad]
        assert enc_train and all("bn" in n or n.startswith("1.") or "downsample.1" in n for n in enc_train)
        assert all(p.requires_grad for n, p in learn.model.named_parameters() if not n.startswith("encoder."))
        assert len(learn.opt.param_groups) == 3
    finally: learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())


def test_get_preds_and_predict(learn):
    preds, targs, dec = learn.get_preds(with_decoded=True)
    assert preds.shape == (4, 12, 64, 96) and dec.shape == (4, 64, 96)
    assert torch.allclose(preds.sum(1), torch.ones(4, 64, 96), atol=1e-4)     # the base loss's softmax
    _, _, losses = learn.get_preds(with_loss=True)
    assert losses.shape == (4,) and learn.loss_func.reduction == "mean"
    mask, dec, probs = learn.predict(learn.dls.valid_ds[0][0])
    assert tuple(dec.shape) == (64, 96) and tuple(probs.shape) == (12, 64, 96)


def test_learner_export_round_trip(learn, tmp_path):
    learn.export(tmp_path/"l.pkl")
    l2 = load_learner(tmp_path/"l.pkl")
    assert isinstance(l2.loss_func, DeepSupervisionLoss)
    x = torch.rand(1, 3, 70, 90)
    learn.model.eval(); l2.model.eval()
    with torch.no_grad(): assert torch.allclose(learn.model(x), l2.model(x), atol=1e-6)


def test_torchscript_of_trained_model(learn, tmp_path):
    m = learn.model.eval()
    sm = export_torchscript(m, tmp_path/"m.pt")
    extra = {"config.json": ""}
    torch.jit.load(str(tmp_path/"m.pt"), _extra_files=extra)
    assert json.loads(extra["config.json"])["arch_type"] == "unet++"
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad(): assert torch.allclose(sm(x), m(x), atol=1e-5)


def test_saved_recipe_rebuilds_the_model(learn, tmp_path):
    save_model(learn, tmp_path/"model")
    cfg = json.loads((tmp_path/"model"/"config.json").read_text())
    assert cfg["arch_type"] == "unet++" and cfg["deep_supervision"] is True and len(cfg["codes"]) == 12
    kw = {k: v for k, v in cfg.items()
          if k not in ("architecture", "stats", "codes", "unet_fastai_version", "arch_type", "arch", "n_out", "img_size", "n_in")}
    m = create_unetpp_model(cfg["arch"], cfg["n_out"], cfg["img_size"], pretrained=False, n_in=cfg["n_in"], **kw)
    m.load_state_dict(load_file(str(tmp_path/"model"/"model.safetensors")))
    x = torch.randn(1, 3, 64, 96)
    learn.model.eval(); m.eval()
    with torch.no_grad(): assert torch.equal(m(x), learn.model(x))


def test_load_model_rebuilds_unetpp(learn, tmp_path):
    save_model(learn, tmp_path/"model")
    m = load_model(tmp_path/"model")
    assert isinstance(m, DynamicUnetPlusPlus)
