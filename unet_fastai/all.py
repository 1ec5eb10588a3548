"`from unet_fastai.all import *`: everything `from fastai.vision.all import *` gives, plus this library."
# Our modules first, then fastai's namespace, so that fastai's own names (`create_body`, `ConvLayer`, `NormType`,
# `Hooks`, `save_model`, ...) keep their fastai meaning; then the U-Net entry points, which are ours.
from .models import *
from .synth import *
from .data import *
from .metrics import *
from .learner import *
from .train import *
from .tiled import *
from .losses import *
from .weightmap import *
from .elastic import *
from .export import *
from .distributed import *
from .degrade import *
from .restore_loss import *
from .restore_data import *
from .restore_learner import *
from fastai.vision.all import *
from .models.unet import DynamicUnet, UnetBlock, create_unet_model, load_fastai_state_dict
from .models.unetpp import DynamicUnetPlusPlus, DeepSupervisionLoss, create_unetpp_model
from .learner import unet_learner
