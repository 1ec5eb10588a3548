"Image restoration (super-resolution, de-JPEG, colorization, inpainting): degradations, paired data, metrics, losses and the learner."
from . import degrade, data, metrics, losses, learner
__all__ = degrade.__all__ + data.__all__ + metrics.__all__ + losses.__all__ + learner.__all__   # before the star imports: a module may export its own name (`encoders`)
from .degrade import *
from .data import *
from .metrics import *
from .losses import *
from .learner import *
