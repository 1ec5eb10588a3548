"Pure PyTorch model code: importing this package never imports fastai."
from .layers import *
from .encoders import *
from .unet import *
from .classic import *
from .unetpp import *
