"Edge cases of the U-Net paper tools: border weight maps, elastic deformation, segmentation losses and metrics."
import math, tracemalloc
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import matplotlib
matplotlib.use("Agg")

from fastai.torch_core import TensorImage, TensorMask, set_seed
from fastai.vision.core import TensorPoint
from unet_fastai.segmentation.weightmap import border_weight_map, class_weight_map, instance_distances, split_instances, WeightMapBlock, TensorWeightMap, drop_weight_maps
from unet_fastai.segmentation.losses import WeightedCrossEntropy, prepare_seg_batch
from unet_fastai.segmentation.elastic import ElasticDeform
from unet_fastai.segmentation.losses import DiceLoss, DiceCELoss, FocalLoss, BCEDiceLoss
from unet_fastai.segmentation.metrics import Dice, IoU, ObjectF1, match_objects


def _two_squares(a=1, b=2):
    lbl = np.zeros((7, 9), np.int32)
    lbl[2:5, 0:3] = a; lbl[2:5, 6:9] = b
    return lbl


def _grid_of_squares(size=128, step=12, side=8):
    lbl, k = np.zeros((size, size), np.int32), 0
    for y in range(4, size - side, step):
        for x in range(4, size - side, step):
            k += 1; lbl[y:y + side, x:x + side] = k
    return lbl, k


# ---------------------------------------------------------------- weight maps

def test_gap_pixel_exact_value():
    w = border_weight_map(_two_squares())
    # 63 px, 18 foreground: w_c(bg) = 63/90 = 0.7; middle of the 3-px gap: d1 = d2 = 2
    assert w[3, 4] == pytest.approx(0.7 + 10 * math.exp(-(2 + 2) ** 2 / (2 * 5 ** 2)), rel=1e-6)
    assert w[3, 4] == pytest.approx(7.9614, abs=1e-4)


def test_instance_ids_need_not_be_consecutive():
    np.testing.assert_array_equal(border_weight_map(_two_squares(3, 70)), border_weight_map(_two_squares()))


@pytest.mark.parametrize("cw", ["balanced", None, [1., 4.]])
def test_zero_or_one_instance_has_no_border_term(cw):
    empty = np.zeros((10, 12), np.int32)
    one = np.zeros((10, 12), np.int32); one[2:5, 2:5] = 4
    for lbl in (empty, one):
        w = border_weight_map(lbl, class_weights=cw)
        np.testing.assert_array_equal(w, class_weight_map(lbl > 0, cw))
    np.testing.assert_array_equal(border_weight_map(empty), np.ones((10, 12), np.float32))


def test_border_term_only_on_background():
    lbl = _two_squares()
    w = border_weight_map(lbl, class_weights=None)
    np.testing.assert_array_equal(w[lbl > 0], 1.)
    assert (w[lbl == 0] >= 1).all() and w[lbl == 0].max() > 5


def test_windowed_distances_match_exact_within_tol():
    lbl, _ = _grid_of_squares(96)
    for tol in (1e-6, 1e-3):
        assert np.abs(border_weight_map(lbl, tol=tol) - border_weight_map(lbl, tol=0)).max() <= tol


def test_weight_map_memory_is_not_per_instance():
    "Two running minima: peak memory must stay far below a (instances, H, W) stack."
    lbl, n = _grid_of_squares(128)
    assert n >= 100
    tracemalloc.start()
    try:
        border_weight_map(lbl, tol=0)            # the worst case: every distance transform on the whole image
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stack = n * lbl.size * 4                     # float32 stack of per-instance distance maps
    assert peak < stack / 4, (peak, stack)
    assert peak < 100 * lbl.size


def test_instance_distances_running_minima():
    lbl = np.zeros((1, 10), np.int32); lbl[0, 0] = 1; lbl[0, 4] = 2; lbl[0, 9] = 3
    d1, d2 = instance_distances(lbl)
    np.testing.assert_array_equal(d1[0], [0, 1, 2, 1, 0, 1, 2, 2, 1, 0])
    np.testing.assert_array_equal(d2[0], [4, 3, 2, 3, 4, 4, 3, 3, 4, 5])


@pytest.mark.parametrize("bad,exc,msg", [
    (np.zeros((2, 3, 3), np.int32), ValueError, "2D"),
    (np.full((3, 3), 0.5), TypeError, "integer"),
    (-np.ones((3, 3), np.int32), ValueError, ">= 0"),
])
def test_weight_map_bad_instances(bad, exc, msg):
    with pytest.raises(exc, match=msg): border_weight_map(bad)


def test_weight_map_bad_parameters():
    lbl = _two_squares()
    with pytest.raises(ValueError, match="sigma"): border_weight_map(lbl, sigma=0)
    with pytest.raises(ValueError, match="w0"): border_weight_map(lbl, w0=-1)
    with pytest.raises(ValueError, match="balanced"): border_weight_map(lbl, class_weights="inverse")
    with pytest.raises(ValueError, match="two numbers"): border_weight_map(lbl, class_weights=[1, 2, 3])


def test_split_instances():
    yy, xx = np.mgrid[:40, :60]
    m = ((yy - 20) ** 2 + (xx - 16) ** 2 <= 64) | ((yy - 20) ** 2 + (xx - 30) ** 2 <= 64)
    assert split_instances(m).max() == 1
    ws = split_instances(m, watershed=True)
    assert ws.max() == 2
    np.testing.assert_array_equal(ws > 0, m)
    assert ws[20, 16] != ws[20, 30]
    with pytest.raises(ValueError, match="connectivity"): split_instances(m, connectivity=4)


# ---------------------------------------------------------------- elastic deformation

def _batch(bs=3, size=48):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    m = ((yy > size // 2).long() * 2 + (xx > size // 3).long())[None].repeat(bs, 1, 1)
    return TensorImage(F.one_hot(m, 4).permute(0, 3, 1, 2).float()), TensorMask(m)


def test_elastic_identity_and_seed():
    img, msk = _batch()
    b = (img, msk)
    assert ElasticDeform(p=0.)(b, split_idx=0) is b
    assert ElasticDeform(p=1.)(b, split_idx=1) is b              # validation: untouched
    t = ElasticDeform(p=1., sigma=3.)
    set_seed(5); i1, m1 = t(b, split_idx=0)
    set_seed(5); i2, m2 = t(b, split_idx=0)
    assert torch.equal(i1, i2) and torch.equal(m1, m2)
    assert not torch.equal(m1, msk)


def test_elastic_moves_image_mask_and_weights_together():
    img, msk = _batch()
    wm = TensorWeightMap(1. + msk.float())
    set_seed(0)
    i2, m2, w2 = ElasticDeform(p=1., sigma=3.)((img, msk, wm), split_idx=0)
    assert m2.dtype == torch.long and isinstance(w2, TensorWeightMap)
    assert torch.equal(w2, 1. + m2.float())
    assert (i2.argmax(1) == m2).float().mean() > 0.98
    for k in range(3): assert torch.equal(m2[k].unique(), msk[k].unique())


def test_elastic_bad_inputs():
    img, msk = _batch()
    with pytest.raises(NotImplementedError, match="points"):
        ElasticDeform(p=1.)((img, TensorPoint(torch.rand(3, 4, 2))), split_idx=0)
    with pytest.raises(ValueError, match="batch transform"): ElasticDeform(p=1.)(TensorImage(torch.rand(3, 8, 8)), split_idx=0)
    with pytest.raises(ValueError, match="must be"): ElasticDeform(p=1.)((img, msk[:2]), split_idx=0)
    with pytest.raises(ValueError, match="grid"): ElasticDeform(grid=1)
    with pytest.raises(ValueError, match="p:"): ElasticDeform(p=1.5)


# ---------------------------------------------------------------- losses

def _pt(seed=0, c=3, b=2, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randint(0, max(c, 2), (b, h, w), generator=g)


MULTI = [WeightedCrossEntropy, DiceLoss, DiceCELoss, FocalLoss]


@pytest.mark.parametrize("loss_cls", MULTI + [BCEDiceLoss])
def test_ignore_index_pixels_do_not_matter(loss_cls):
    p, t = _pt(c=1 if loss_cls is BCEDiceLoss else 3)
    t = t.clone(); t[:, :2] = 255
    loss = loss_cls(ignore_index=255)
    p2 = p.clone(); p2[:, :, :2] = torch.randn_like(p2[:, :, :2]) * 20
    assert torch.allclose(loss(p, t), loss(p2, t), atol=1e-6)
    pg = p.clone().requires_grad_()
    loss(pg, t).backward()
    assert pg.grad[:, :, :2].abs().max() == 0                     # no gradient from Void pixels
    assert pg.grad[:, :, 2:].abs().max() > 0


@pytest.mark.parametrize("loss_cls", MULTI + [BCEDiceLoss])
def test_label_out_of_range_is_a_clear_error(loss_cls):
    p, t = _pt(c=1 if loss_cls is BCEDiceLoss else 3)
    with pytest.raises(ValueError, match="out of range"): loss_cls()(p, t + 5)
    with pytest.raises(ValueError, match="out of range"): loss_cls(ignore_index=255)(p, t - 1)
    with pytest.raises(ValueError, match="to match pred"): loss_cls()(p, t[:, :3])


def test_channel_count_errors():
    p, t = _pt(c=1)
    for cls in (WeightedCrossEntropy, DiceLoss, DiceCELoss):
        with pytest.raises(ValueError, match="BCEDiceLoss"): cls()(p, t)
    p3, t3 = _pt(c=3)
    with pytest.raises(ValueError, match="one output channel"): BCEDiceLoss()(p3, t3)
    with pytest.raises(TypeError, match="integer"): DiceLoss()(p3, t3.float() + .5)
    with pytest.raises(ValueError, match="weights"): WeightedCrossEntropy()(p3, t3, torch.ones(2, 5, 7))
    with pytest.raises(ValueError, match="reduction"): WeightedCrossEntropy(reduction="avg")(p3, t3)


@pytest.mark.parametrize("loss_cls", MULTI + [BCEDiceLoss])
def test_reduction_none_is_one_loss_per_image(loss_cls):
    p, t = _pt(c=1 if loss_cls is BCEDiceLoss else 3, b=4)
    assert loss_cls(reduction="none")(p, t).shape == (4,)


def test_weights_scale_pixelwise_terms():
    p, t = _pt()
    w = torch.full(t.shape, 3.)
    assert torch.allclose(WeightedCrossEntropy()(p, t, w), 3 * F.cross_entropy(p, t))
    assert torch.allclose(FocalLoss()(p, t, w), 3 * FocalLoss()(p, t))
    assert torch.allclose(DiceLoss()(p, t, w), DiceLoss()(p, t))   # Dice ignores weight maps
    pb, tb = _pt(c=1)
    assert torch.allclose(BCEDiceLoss(dice_weight=0)(pb, tb, w), 3 * F.binary_cross_entropy_with_logits(pb[:, 0], tb.float()))


def test_prepare_seg_batch_accepts_channel_dim_targets():
    p, t = _pt()
    _, t2, valid, _ = prepare_seg_batch(p, t[:, None])
    assert torch.equal(t2, t) and valid.all()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"): prepare_seg_batch(p[0], t[0])


# ---------------------------------------------------------------- metrics

@pytest.mark.parametrize("metric", [lambda: Dice(), lambda: IoU(), lambda: Dice(include_background=False),
                                    lambda: IoU(ignore_index=255), lambda: ObjectF1()])
def test_metrics_accumulate_like_one_big_batch(metric):
    g = torch.Generator().manual_seed(1)
    P = torch.randn(6, 3, 16, 16, generator=g)
    T = F.interpolate(torch.randint(0, 3, (6, 1, 4, 4), generator=g).float(), size=(16, 16)).long()[:, 0]
    whole, parts = metric(), metric()
    T[0] = 0; T[1, :4] = 255 if getattr(whole, "ignore_index", None) == 255 else 0
    whole.update(P, T)
    for i in (0, 1, 3):
        parts.update(P[i:i + 3] if i == 3 else P[i:i + 1], T[i:i + 3] if i == 3 else T[i:i + 1])
    parts.update(P[2:3], T[2:3])
    assert parts.value == pytest.approx(whole.value)


def test_metrics_inside_learner_loop_and_reset():
    "`accumulate(learn)` reads learn.pred and learn.yb[0] (a weight map in yb[1] is ignored)."
    class _L: pass
    P, T = _pt(c=3, b=4, h=8, w=8)
    m = Dice()
    for i in range(2):
        learn = _L(); learn.pred, learn.yb = P[2 * i:2 * i + 2], (T[2 * i:2 * i + 2], torch.ones(2, 8, 8))
        m.accumulate(learn)
    ref = Dice(); ref.update(P, T)
    assert m.value == pytest.approx(ref.value)
    m.reset(); assert m.value is None


def test_metric_errors():
    P, T = _pt(c=3)
    with pytest.raises(ValueError, match="out of range"): Dice().update(P, T + 3)
    d = Dice(); d.update(P, T)
    with pytest.raises(ValueError, match="reset"): d.update(P[:, :2], T.clamp(0, 1))
    with pytest.raises(ValueError, match="iou_thresh"): ObjectF1(iou_thresh=1.5)
    with pytest.raises(ValueError, match="shapes differ"): match_objects(np.zeros((2, 2)), np.zeros((3, 3)))


def test_object_f1_touching_objects_merged():
    T = torch.zeros(1, 10, 12, dtype=torch.long)
    T[0, 1:5, 1:5] = 1; T[0, 1:5, 7:11] = 1
    P = T.clone(); P[0, 2:4, 5:7] = 1                              # a bridge merges the two objects
    f = ObjectF1(); f.update(F.one_hot(P, 2).permute(0, 3, 1, 2).float(), T)
    assert (f.tp, f.n_pred, f.n_true) == (0, 1, 2) and f.value == 0
    fb = ObjectF1(); fb.update((P[:, None].float() - .5) * 10, T)   # binary logits
    assert (fb.tp, fb.n_pred, fb.n_true) == (0, 1, 2)


def test_match_objects_greedy_below_half():
    t = np.array([[1, 1, 1, 0, 2, 2]])
    p = np.array([[5, 5, 5, 5, 5, 0]])          # IoU 3/5 with 1, 1/6 with 2
    assert match_objects(t, p, 0.1) == 1
    assert match_objects(t, p, 0.5) == 1
    assert match_objects(t, p, 0.7) == 0


# ---------------------------------------------------------------- fastai integration (a 1x1-conv model: fast)

def _data(n=6, size=32):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        lbl = np.zeros((size, size), np.int32)
        for k, (y, x) in enumerate(rng.integers(2, size - 10, size=(3, 2)), 1): lbl[y:y + 8, x:x + 8] = k
        img = np.stack([np.where(lbl > 0, 200, 30)] * 3, -1).astype(np.uint8)
        out.append((img, lbl))
    return out


def test_weight_map_block_learner_predict_and_show_results():
    from fastai.data.block import DataBlock
    from fastai.vision.data import ImageBlock, MaskBlock
    from fastai.vision.augment import Flip
    from fastai.learner import Learner
    data = _data()
    dblock = DataBlock(blocks=(ImageBlock, MaskBlock(["bg", "fg"]), WeightMapBlock()), n_inp=1,
                       getters=[lambda i: data[i][0], lambda i: (data[i][1] > 0).astype(np.uint8), lambda i: data[i][1]],
                       splitter=lambda items: ([0, 1, 2, 3], [4, 5]),
                       batch_tfms=[Flip(), ElasticDeform(p=1., sigma=2.)])
    dls = dblock.dataloaders(list(range(6)), bs=2, num_workers=0)
    x, m, w = dls.one_batch()
    assert isinstance(w, TensorWeightMap) and w.dtype == torch.float32 and w.shape == m.shape
    learn = Learner(dls, nn.Conv2d(3, 2, 1), loss_func=DiceCELoss(), metrics=[Dice(), IoU(), ObjectF1()])
    learn.fit(1, 1e-2)
    _, _, losses = learn.get_preds(with_loss=True)
    assert losses.shape == (2,)
    learn.dls = drop_weight_maps(dls)
    mask, _, probs = learn.predict(data[5][0])
    assert mask.shape == (32, 32) and probs.shape == (2, 32, 32)
    learn.show_results(max_n=2)


def test_binary_learner_predict():
    from fastai.data.block import DataBlock
    from fastai.vision.data import ImageBlock, MaskBlock
    from fastai.learner import Learner
    data = _data()
    dls = DataBlock(blocks=(ImageBlock, MaskBlock(["bg", "fg"])), get_x=lambda i: data[i][0],
                    get_y=lambda i: (data[i][1] > 0).astype(np.uint8),
                    splitter=lambda items: ([0, 1, 2, 3], [4, 5])).dataloaders(list(range(6)), bs=2, num_workers=0)
    learn = Learner(dls, nn.Conv2d(3, 1, 1), loss_func=BCEDiceLoss(), metrics=[Dice(include_background=False), ObjectF1()])
    learn.fit(1, 1e-2)
    mask, dec, probs = learn.predict(data[5][0])
    assert mask.shape == (32, 32) and probs.shape == (1, 32, 32)
    assert set(mask.unique().tolist()) <= {0, 1}
    learn.show_results(max_n=2)
