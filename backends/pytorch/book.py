"""The book's PyTorch GoogLeNet, exactly as d2l writes it (chapter 8.4, "Networks with
Parallel Concatenations"; the classic d2l-zh / d2l-en 0.17 PyTorch tab that the book's
``train_ch6`` with lr 0.1 trains), trained as ``d2l.train_ch6`` does.

:func:`to_canonical` maps the book's parameters onto the table's canonical names, so
``set_weights(build(), to_canonical(net))`` must give the book's logits;
:func:`make_book_step` is one step of ``train_ch6``'s inner loop.
"""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class d2l:
    """``d2l.try_gpu`` and ``d2l.accuracy``, verbatim from d2l's torch module: importing
    ``d2l.torch`` itself needs torchvision, which has no CPU wheel for torch 2.13 here."""

    @staticmethod
    def try_gpu(i=0):
        if torch.cuda.device_count() >= i + 1:
            return torch.device(f'cuda:{i}')
        return torch.device('cpu')

    @staticmethod
    def accuracy(y_hat, y):
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())


# ----------------------------------------------------------------- the book's code
class Inception(nn.Module):
    # `c1`--`c4` are the number of output channels for each path
    def __init__(self, in_channels, c1, c2, c3, c4, **kwargs):
        super(Inception, self).__init__(**kwargs)
        # Path 1 is a single 1 x 1 convolutional layer
        self.p1_1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        # Path 2 is a 1 x 1 convolutional layer followed by a 3 x 3
        # convolutional layer
        self.p2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        # Path 3 is a 1 x 1 convolutional layer followed by a 5 x 5
        # convolutional layer
        self.p3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        # Path 4 is a 3 x 3 maximum pooling layer followed by a 1 x 1
        # convolutional layer
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)

    def forward(self, x):
        p1 = F.relu(self.p1_1(x))
        p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p4 = F.relu(self.p4_2(self.p4_1(x)))
        # Concatenate the outputs on the channel dimension
        return torch.cat((p1, p2, p3, p4), dim=1)


def _book_googlenet():
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(nn.Conv2d(64, 64, kernel_size=1),
                       nn.ReLU(),
                       nn.Conv2d(64, 192, kernel_size=3, padding=1),
                       nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b3 = nn.Sequential(Inception(192, 64, (96, 128), (16, 32), 32),
                       Inception(256, 128, (128, 192), (32, 96), 64),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b4 = nn.Sequential(Inception(480, 192, (96, 208), (16, 48), 64),
                       Inception(512, 160, (112, 224), (24, 64), 64),
                       Inception(512, 128, (128, 256), (24, 64), 64),
                       Inception(512, 112, (144, 288), (32, 64), 64),
                       Inception(528, 256, (160, 320), (32, 128), 128),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b5 = nn.Sequential(Inception(832, 256, (160, 320), (32, 128), 128),
                       Inception(832, 384, (192, 384), (48, 128), 128),
                       nn.AdaptiveAvgPool2d((1, 1)),
                       nn.Flatten())
    net = nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(1024, 10))
    return net


# ----------------------------------------------------------------- helpers for the checks
def book_net(device=None):
    """The book's net, initialised as ``d2l.train_ch6`` does (Xavier-uniform weights of
    ``nn.Linear`` and ``nn.Conv2d``; PyTorch's default biases), on ``d2l.try_gpu()``."""
    net = _book_googlenet()

    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)
    net.apply(init_weights)
    return net.to(device or d2l.try_gpu())


_CONVS = ("p1_1", "p2_1", "p2_2", "p3_1", "p3_2", "p4_2")


def to_canonical(net):
    """The book's parameters under the table's canonical names (``b1.conv1.weight``, ...,
    ``head.dense1.bias``), in table order; PyTorch's layouts are the canonical ones."""
    from common.net import spec as S, weights as W
    spec = S.googlenet("d2l")
    out = OrderedDict()

    def put(name, layer):
        out[f"{name}.weight"] = layer.weight.detach().cpu().numpy()
        out[f"{name}.bias"] = layer.bias.detach().cpu().numpy()

    # The book's b1..b5 are our stages b1..b5 (the book's ReLU modules are folded into
    # our conv records, so we walk only the book's parameterised modules and pools).
    for st, book_stage in zip(spec.stages[:5], list(net)[:5]):
        blocks = [m for m in book_stage if not isinstance(m, nn.ReLU)]
        for (name, layer), block in zip(st.layers, blocks):
            if layer.kind == "conv":
                put(f"{st.name}.{name}", block)
            elif layer.kind == "inception":
                for conv in _CONVS:
                    put(f"{st.name}.{name}.{conv}", getattr(block, conv))
    put("head.dense1", net[5])
    return W.check(spec, out)


def book_logits(net, X):
    """The book net's logits for a NumPy NCHW batch, as NumPy."""
    device = next(net.parameters()).device
    net.eval()
    with torch.no_grad():
        return net(torch.as_tensor(np.asarray(X, np.float32), device=device)).cpu().numpy()


def make_book_step(net, lr=0.1):
    """``step(X, y)``: one training step exactly as ``d2l.train_ch6``'s inner loop (SGD,
    ``nn.CrossEntropyLoss``, ``zero_grad`` / ``backward`` / ``step``, the metric update
    with ``d2l.accuracy``) on NumPy inputs; returns (summed loss, correct)."""
    device = next(net.parameters()).device
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    net.train()

    def step(X, y):
        optimizer.zero_grad()
        X = torch.as_tensor(np.asarray(X, np.float32)).to(device)
        y = torch.as_tensor(np.asarray(y, np.int64)).to(device)
        y_hat = net(X)
        l = loss(y_hat, y)
        l.backward()
        optimizer.step()
        with torch.no_grad():
            return float(l * X.shape[0]), float(d2l.accuracy(y_hat, y))

    return step


# ----------------------------------------------------------------- the book's earlier nets
# Chapter 8's exercise 3 compares GoogLeNet's parameters with AlexNet's, VGG's and NiN's:
# their d2l 1.0.3 PyTorch code (chapters 8.1 to 8.3), each class's ``self.net`` as the book
# writes it, returned by a function (``d2l.Classifier`` needs ``d2l.torch``, see above).
# The layers are lazy: one forward pass (the book's ``layer_summary((1, 1, 224, 224))``)
# creates their parameters.  tests/test_classic.py counts them against the presets
# ``d2l_alexnet``, ``d2l_vgg11`` and ``d2l_nin``.
def init_cnn(module):
    """``d2l.init_cnn``, verbatim from d2l 1.0.3's torch module."""
    if type(module) == nn.Linear or type(module) == nn.Conv2d:
        nn.init.xavier_uniform_(module.weight)


d2l.init_cnn = staticmethod(init_cnn)


def alexnet(num_classes=10):
    """d2l 8.1 ``AlexNet().net``."""
    net = nn.Sequential(
        nn.LazyConv2d(96, kernel_size=11, stride=4, padding=1),
        nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.LazyConv2d(256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.LazyConv2d(384, kernel_size=3, padding=1), nn.ReLU(),
        nn.LazyConv2d(384, kernel_size=3, padding=1), nn.ReLU(),
        nn.LazyConv2d(256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2), nn.Flatten(),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.LazyLinear(num_classes))
    net.apply(d2l.init_cnn)
    return net


def vgg_block(num_convs, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.LazyConv2d(out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(arch, num_classes=10):
    """d2l 8.2 ``VGG(arch).net``; the chapter's VGG-11 is
    ``arch=((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))``."""
    conv_blks = []
    for (num_convs, out_channels) in arch:
        conv_blks.append(vgg_block(num_convs, out_channels))
    net = nn.Sequential(
        *conv_blks, nn.Flatten(),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
        nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
        nn.LazyLinear(num_classes))
    net.apply(d2l.init_cnn)
    return net


def nin_block(out_channels, kernel_size, strides, padding):
    return nn.Sequential(
        nn.LazyConv2d(out_channels, kernel_size, strides, padding), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU())


def nin(num_classes=10):
    """d2l 8.3 ``NiN().net``."""
    net = nn.Sequential(
        nin_block(96, kernel_size=11, strides=4, padding=0),
        nn.MaxPool2d(3, stride=2),
        nin_block(256, kernel_size=5, strides=1, padding=2),
        nn.MaxPool2d(3, stride=2),
        nin_block(384, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Dropout(0.5),
        nin_block(num_classes, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten())
    net.apply(d2l.init_cnn)
    return net


def layer_summary(net, X_shape=(1, 1, 224, 224), device="meta"):
    """``d2l.Classifier.layer_summary`` as a function: each top-level layer's class name and
    output shape for one input of ``X_shape``, returned instead of printed.  On the ``'meta'``
    device (the default) the lazy layers get their shapes and no number is computed: build the
    net inside ``with torch.device('meta'):``."""
    X = torch.randn(*X_shape, device=device)
    rows = []
    for layer in net:
        X = layer(X)
        rows.append((layer.__class__.__name__, tuple(X.shape)))
    return rows
