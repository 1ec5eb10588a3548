"""fastai-style U-Nets for segmentation and image restoration: DynamicUnet on any encoder, the U-Net paper's tools, and safe deployment

Modules:

- `unet_fastai.all`: `from unet_fastai.all import *`: fastai's vision namespace plus this library, where every name this library defines means this library's object. fastai defines some of the same names with another meaning (`create_body`, `save_model`, `load_model`, `Dice`, `DiceLoss`, `FocalLoss`, `OpenMask`, `ConvLayer`, `NormType`, ...): ours are the ones exported here; fastai's stay at their own paths (`fastai.vision.all.save_model`). `unet_fastai.all.shadowed` lists them."""

__version__ = "0.0.1"
