"Prediction and deployment: inference copies with folded BatchNorm, tiled prediction of any image size, graph export (ONNX, TorchScript, torch.export), safe save/load (safetensors + JSON), and sharing on the Hugging Face Hub."
from . import fold, tiled, export, io, hub
__all__ = fold.__all__ + tiled.__all__ + export.__all__ + io.__all__ + hub.__all__   # before the star imports: a module may export its own name (`encoders`)
from .fold import *
from .tiled import *
from .export import *
from .io import *
from .hub import *
