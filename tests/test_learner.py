"fastai workflows on unet_learner: fine_tune, lr_find, show_results, export/load_learner."
import matplotlib
matplotlib.use("Agg")
import pytest, torch
from fastai.learner import load_learner
from unet_fastai.segmentation.synth import make_synth_camvid
from unet_fastai.segmentation.data import camvid_dls
from unet_fastai.learner import unet_learner
from unet_fastai.segmentation.data import camvid_metrics


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    dls = camvid_dls(make_synth_camvid(d/"camvid", n_train=8, n_valid=4, size=(64, 96)), bs=4, num_workers=0)
    return unet_learner(dls, "resnet18", pretrained=False, metrics=camvid_metrics(dls), path=d)


def test_fine_tune_runs_both_phases(learn):
    learn.fine_tune(1, freeze_epochs=1)
    assert len(learn.recorder.values) == 1          # the unfrozen phase's epoch (the frozen one is its own fit)
    assert all(p.requires_grad for p in learn.model.parameters())
    names = learn.recorder.metric_names
    assert "acc_camvid" in names and "miou" in names


def test_lr_find(learn):
    # stop_div=False: a run that diverged within its few iterations would leave fastai no losses to suggest from
    res = learn.lr_find(num_it=10, stop_div=False, show_plot=False)
    assert res.valley > 0 and len(learn.recorder.lrs) > 0


def test_show_results_and_export(learn, tmp_path):
    learn.show_results(max_n=2)
    learn.export(tmp_path/"l.pkl")
    l2 = load_learner(tmp_path/"l.pkl")
    sd, sd2 = learn.model.state_dict(), l2.model.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = torch.rand(1, 3, 64, 96)
    # the same memory format for both: `ChannelsLast` may have left one model channels-last, and channels-last and
    # contiguous convolutions differ in their last bits (a few 1e-6), which is not what this test is about
    for m in (learn.model, l2.model): m.eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        assert torch.allclose(learn.model(x), l2.model(x), atol=1e-6)
