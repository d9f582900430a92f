"""The book's PaddlePaddle GoogLeNet, exactly as d2l writes it (chapter 8.4, "Networks with
Parallel Concatenations"; d2l-ai/d2l-zh chapter_convolutional-modern/googlenet.md, the
Paddle tab, with the English book's comments), trained as the book's ``d2l.train_ch6``
(d2l-zh ``d2l/paddle.py``) does.

:func:`to_canonical` maps the book's parameters onto the table's canonical names, so
``set_weights(build(), to_canonical(net))`` must give the book's logits;
:func:`make_book_step` is one step of ``train_ch6``'s inner loop.
"""
import warnings
from collections import OrderedDict

import numpy as np

with warnings.catch_warnings():  # the book: warnings.filterwarnings("ignore") (here scoped)
    warnings.simplefilter("ignore")
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F


class d2l:
    """``d2l.try_gpu`` and ``d2l.accuracy``, verbatim from d2l-zh's ``d2l/paddle.py``: the
    installed d2l (1.0.3) has no Paddle module."""

    @staticmethod
    def try_gpu(i=0):
        if paddle.device.cuda.device_count() >= i + 1:
            return paddle.device.set_device(f'gpu:{i}')
        return paddle.device.set_device("cpu")

    @staticmethod
    def accuracy(y_hat, y):
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        if len(y_hat.shape) < len(y.shape):
            cmp = y_hat.astype(y.dtype) == y.squeeze()
        else:
            cmp = y_hat.astype(y.dtype) == y
        return float(cmp.astype(y.dtype).sum())


# ----------------------------------------------------------------- the book's code
class Inception(nn.Layer):
    # `c1`--`c4` are the number of output channels for each path
    def __init__(self, in_channels, c1, c2, c3, c4, **kwargs):
        super(Inception, self).__init__(**kwargs)
        # Path 1 is a single 1 x 1 convolutional layer
        self.p1_1 = nn.Conv2D(in_channels, c1, kernel_size=1)
        # Path 2 is a 1 x 1 convolutional layer followed by a 3 x 3
        # convolutional layer
        self.p2_1 = nn.Conv2D(in_channels, c2[0], kernel_size=1)
        self.p2_2 = nn.Conv2D(c2[0], c2[1], kernel_size=3, padding=1)
        # Path 3 is a 1 x 1 convolutional layer followed by a 5 x 5
        # convolutional layer
        self.p3_1 = nn.Conv2D(in_channels, c3[0], kernel_size=1)
        self.p3_2 = nn.Conv2D(c3[0], c3[1], kernel_size=5, padding=2)
        # Path 4 is a 3 x 3 maximum pooling layer followed by a 1 x 1
        # convolutional layer
        self.p4_1 = nn.MaxPool2D(kernel_size=3, stride=1, padding=1)
        self.p4_2 = nn.Conv2D(in_channels, c4, kernel_size=1)

    def forward(self, x):
        p1 = F.relu(self.p1_1(x))
        p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p4 = F.relu(self.p4_2(self.p4_1(x)))
        # Concatenate the outputs on the channel dimension
        return paddle.concat(x=[p1, p2, p3, p4], axis=1)


def _book_googlenet():
    b1 = nn.Sequential(nn.Conv2D(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.ReLU(),
                       nn.MaxPool2D(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(nn.Conv2D(64, 64, kernel_size=1),
                       nn.ReLU(),
                       nn.Conv2D(64, 192, kernel_size=3, padding=1),
                       nn.ReLU(),
                       nn.MaxPool2D(kernel_size=3, stride=2, padding=1))
    b3 = nn.Sequential(Inception(192, 64, (96, 128), (16, 32), 32),
                       Inception(256, 128, (128, 192), (32, 96), 64),
                       nn.MaxPool2D(kernel_size=3, stride=2, padding=1))
    b4 = nn.Sequential(Inception(480, 192, (96, 208), (16, 48), 64),
                       Inception(512, 160, (112, 224), (24, 64), 64),
                       Inception(512, 128, (128, 256), (24, 64), 64),
                       Inception(512, 112, (144, 288), (32, 64), 64),
                       Inception(528, 256, (160, 320), (32, 128), 128),
                       nn.MaxPool2D(kernel_size=3, stride=2, padding=1))
    b5 = nn.Sequential(Inception(832, 256, (160, 320), (32, 128), 128),
                       Inception(832, 384, (192, 384), (48, 128), 128),
                       nn.AdaptiveAvgPool2D((1, 1)),
                       nn.Flatten())
    net = nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(1024, 10))
    return net


# ----------------------------------------------------------------- helpers for the checks
def book_net(device=None):
    """The book's net, initialised as ``d2l.train_ch6`` does, on ``d2l.try_gpu()``.

    The book's Paddle ``init_weights`` only *creates* ``nn.initializer.XavierUniform``
    objects and never applies them, so the net keeps Paddle's default initialisers;
    it is kept here verbatim.
    """
    device = device or d2l.try_gpu()
    net = _book_googlenet()

    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2D:
            nn.initializer.XavierUniform(m.weight)
    net.apply(init_weights)
    net.to(device)
    return net


_CONVS = ("p1_1", "p2_1", "p2_2", "p3_1", "p3_2", "p4_2")


def to_canonical(net):
    """The book's parameters under the table's canonical names (``b1.conv1.weight``, ...,
    ``head.dense1.bias``), in table order; conv OIHW as in Paddle, ``nn.Linear``'s
    (in, out) weight transposed to the canonical (out, in)."""
    from common.net import spec as S, weights as W
    spec = S.googlenet("d2l")
    out = OrderedDict()

    def put(name, layer, transpose=False):
        w = layer.weight.numpy()
        out[f"{name}.weight"] = np.ascontiguousarray(w.T if transpose else w)
        out[f"{name}.bias"] = layer.bias.numpy()

    # The book's b1..b5 are our stages b1..b5 (the book's ReLU layers are folded into
    # our conv records, so we walk only the book's parameterised layers and pools).
    stages = list(net.children())
    for st, book_stage in zip(spec.stages[:5], stages[:5]):
        blocks = [m for m in book_stage.children() if not isinstance(m, nn.ReLU)]
        for (name, layer), block in zip(st.layers, blocks):
            if layer.kind == "conv":
                put(f"{st.name}.{name}", block)
            elif layer.kind == "inception":
                for conv in _CONVS:
                    put(f"{st.name}.{name}.{conv}", getattr(block, conv))
    put("head.dense1", stages[5], transpose=True)
    return W.check(spec, out)


def book_logits(net, X):
    """The book net's logits for a NumPy NCHW batch, as NumPy."""
    net.eval()
    with paddle.no_grad():
        return net(paddle.to_tensor(np.asarray(X, np.float32))).numpy()


def make_book_step(net, lr=0.1):
    """``step(X, y)``: one training step exactly as ``d2l.train_ch6``'s inner loop (SGD,
    ``nn.CrossEntropyLoss``, ``clear_grad`` / ``backward`` / ``step``, the metric update
    with ``d2l.accuracy``) on NumPy inputs; returns (summed loss, correct)."""
    device = d2l.try_gpu()
    optimizer = paddle.optimizer.SGD(learning_rate=lr, parameters=net.parameters())
    loss = nn.CrossEntropyLoss()
    net.train()

    def step(X, y):
        optimizer.clear_grad()
        X = paddle.to_tensor(np.asarray(X, np.float32), place=device)
        y = paddle.to_tensor(np.asarray(y, np.int64), place=device)
        y_hat = net(X)
        l = loss(y_hat, y)
        l.backward()
        optimizer.step()
        with paddle.no_grad():
            return float(l * X.shape[0]), d2l.accuracy(y_hat, y)

    return step


# ----------------------------------------------------------------- the book's earlier nets
# Chapter 8's exercise 3 compares GoogLeNet's parameters with AlexNet's, VGG's and NiN's:
# their d2l Paddle code (d2l-zh chapters 7.1 to 7.3, the Paddle tab; d2l 1.0.3's chapters
# 8.1 to 8.3 have no Paddle tab), each ``net`` as the book writes it, returned by a function.
# The layers take their input widths as arguments (``nn.Linear(6400, 4096)``: the 224x224
# input is written into the code), so the parameters exist at once.  tests/test_classic.py
# counts them against the presets ``d2l_alexnet``, ``d2l_vgg11`` and ``d2l_nin``.
def alexnet():
    """d2l-zh 7.1's AlexNet ``net`` (the book's comments in English)."""
    net = nn.Sequential(
        # Here, we use a larger 11 x 11 window to capture objects. At the same
        # time, we use a stride of 4 to greatly reduce the height and width of
        # the output. Here, the number of output channels is much larger than
        # that in LeNet
        nn.Conv2D(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2),
        # Make the convolution window smaller, set padding to 2 for consistent
        # height and width across the input and output, and increase the
        # number of output channels
        nn.Conv2D(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2),
        # Use three successive convolutional layers and a smaller convolution
        # window. Except for the final convolutional layer, the number of
        # output channels is further increased. Pooling layers are not used to
        # reduce the height and width of input after the first two
        # convolutional layers
        nn.Conv2D(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2D(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2D(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2), nn.Flatten(),
        # Here, the number of outputs of the fully-connected layer is several
        # times larger than that in LeNet. Use the dropout layer to mitigate
        # overfitting
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=0.5),
        # Output layer. Since we are using Fashion-MNIST, the number of classes
        # is 10, instead of 1000 as in the paper
        nn.Linear(4096, 10)
    )
    return net


def vgg_block(num_convs, in_channels, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(
            nn.Conv2D(in_channels, out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2D(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(conv_arch):
    """d2l-zh 7.2's ``vgg(conv_arch)``; the chapter's VGG-11 is
    ``conv_arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))``."""
    conv_blks = []
    in_channels = 1
    # The convolutional part
    for (num_convs, out_channels) in conv_arch:
        conv_blks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels

    return nn.Sequential(*conv_blks, nn.Flatten(),
                         # The fully-connected part
                         nn.Linear(out_channels * 7 * 7, 4096), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(4096, 10))


def nin_block(in_channels, out_channels, kernel_size, strides, padding):
    return nn.Sequential(
        nn.Conv2D(in_channels, out_channels, kernel_size, strides, padding),
        nn.ReLU(),
        nn.Conv2D(out_channels, out_channels, kernel_size=1),
        nn.ReLU(),
        nn.Conv2D(out_channels, out_channels, kernel_size=1),
        nn.ReLU())


def nin():
    """d2l-zh 7.3's NiN ``net``."""
    net = nn.Sequential(
        nin_block(1, 96, kernel_size=11, strides=4, padding=0),
        nn.MaxPool2D(3, stride=2),
        nin_block(96, 256, kernel_size=5, strides=1, padding=2),
        nn.MaxPool2D(3, stride=2),
        nin_block(256, 384, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2D(3, stride=2), nn.Dropout(0.5),
        # There are 10 label classes
        nin_block(384, 10, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2D((1, 1)),
        # Transform the four-dimensional output into two-dimensional output
        # with a shape of (batch size, 10)
        nn.Flatten())
    return net
