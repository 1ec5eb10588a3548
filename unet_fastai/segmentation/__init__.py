"Segmentation: data (CamVid-style folders, synthetic scenes and nuclei), losses, metrics, the U-Net paper's border weight maps and elastic deformation, and a resumable training run."
from . import synth, data, losses, metrics, weightmap, elastic, nuclei, train
__all__ = synth.__all__ + data.__all__ + losses.__all__ + metrics.__all__ + weightmap.__all__ + elastic.__all__ + nuclei.__all__ + train.__all__   # before the star imports: a module may export its own name (`encoders`)
from .synth import *
from .data import *
from .losses import *
from .metrics import *
from .weightmap import *
from .elastic import *
from .nuclei import *
from .train import *
