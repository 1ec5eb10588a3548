"""`from unet_fastai.all import *`: fastai's vision namespace plus this library, where every name this library defines
means this library's object. fastai defines some of the same names with another meaning (`create_body`, `save_model`,
`load_model`, `Dice`, `DiceLoss`, `FocalLoss`, `OpenMask`, `ConvLayer`, `NormType`, ...): ours are the ones exported
here; fastai's stay at their own paths (`fastai.vision.all.save_model`). `unet_fastai.all.shadowed` lists them."""
import fastai.vision.all as _fastai
from fastai.vision.all import *
from .models import *
from .preprocess import *
from .learner import *
from .distributed import *
from .segmentation import *
from .restoration import *
from .inference import *
from . import models as _m, preprocess as _p, learner as _l, distributed as _d, segmentation as _s, restoration as _r, inference as _i

_ours = _m.__all__ + _p.__all__ + _l.__all__ + _d.__all__ + _s.__all__ + _r.__all__ + _i.__all__
shadowed = sorted(n for n in _ours if hasattr(_fastai, n) and getattr(_fastai, n) is not globals()[n])
