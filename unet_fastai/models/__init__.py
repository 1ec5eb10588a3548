"Pure PyTorch model code: importing this package never imports fastai."
from . import layers, encoders, config, unet, unetpp, classic
__all__ = layers.__all__ + encoders.__all__ + config.__all__ + unet.__all__ + classic.__all__ + unetpp.__all__   # before the star imports: a module may export its own name (`encoders`)
from .layers import *
from .encoders import *
from .config import *
from .unet import *
from .classic import *
from .unetpp import *
