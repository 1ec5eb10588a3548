"""A small ResNet-shaped CNN registered as the encoder 'tiny_cnn': the reference fixtures in `fixtures/` are U-Nets on it,
small enough to keep their weights in the repository (a resnet18 U-Net is 60 MB)."""
import torch.nn as nn


def _block(ni, nf, stride):
    return nn.Sequential(nn.Conv2d(ni, nf, 3, stride, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())


class TinyCNN(nn.Module):
    "conv, bn, relu, a 2x2 max pool (which rounds odd sizes down, as VGG's), then three levels; pool and fc like a ResNet."
    def __init__(self, weights=None, **kwargs):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        self.layer1, self.layer2, self.layer3 = _block(8, 8, 1), _block(8, 16, 2), _block(16, 24, 2)
        self.layer4 = _block(24, 32, 2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 10)

    def forward(self, x): return self.fc(self.avgpool(self.layer4(self.layer3(self.layer2(self.layer1(
        self.maxpool(self.relu(self.bn1(self.conv1(x))))))))).flatten(1))


def tiny_cnn(weights=None, **kwargs): return TinyCNN()


def register():
    from unet_fastai.models import register_encoder
    register_encoder('tiny_cnn', tiny_cnn, cut=-2, split=lambda enc: [enc[:6], enc[6:]])
