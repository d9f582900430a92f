"""The book's MXNet GoogLeNet, exactly as d2l writes it (chapter 8.4, "Networks with
Parallel Concatenations"; d2l-ai/d2l-zh chapter_convolutional-modern/googlenet.md, the
MXNet tab, with the English book's comments), trained as the book's ``d2l.train_ch6``
does.

Used to check the MXNet backend against the book: :func:`to_canonical` maps the book's
parameters onto the table's canonical names, so ``set_weights(build(), to_canonical(net))``
must give the book's logits; :func:`make_book_step` is one step of ``train_ch6``.
"""
from collections import OrderedDict

import numpy as onp
from d2l import mxnet as d2l
from mxnet import autograd, gluon, init, np, npx
from mxnet.gluon import nn

npx.set_np()


# ----------------------------------------------------------------- the book's code
class Inception(nn.Block):
    # `c1`--`c4` are the number of output channels for each path
    def __init__(self, c1, c2, c3, c4, **kwargs):
        super(Inception, self).__init__(**kwargs)
        # Path 1 is a single 1 x 1 convolutional layer
        self.p1_1 = nn.Conv2D(c1, kernel_size=1, activation='relu')
        # Path 2 is a 1 x 1 convolutional layer followed by a 3 x 3
        # convolutional layer
        self.p2_1 = nn.Conv2D(c2[0], kernel_size=1, activation='relu')
        self.p2_2 = nn.Conv2D(c2[1], kernel_size=3, padding=1,
                              activation='relu')
        # Path 3 is a 1 x 1 convolutional layer followed by a 5 x 5
        # convolutional layer
        self.p3_1 = nn.Conv2D(c3[0], kernel_size=1, activation='relu')
        self.p3_2 = nn.Conv2D(c3[1], kernel_size=5, padding=2,
                              activation='relu')
        # Path 4 is a 3 x 3 maximum pooling layer followed by a 1 x 1
        # convolutional layer
        self.p4_1 = nn.MaxPool2D(pool_size=3, strides=1, padding=1)
        self.p4_2 = nn.Conv2D(c4, kernel_size=1, activation='relu')

    def forward(self, x):
        p1 = self.p1_1(x)
        p2 = self.p2_2(self.p2_1(x))
        p3 = self.p3_2(self.p3_1(x))
        p4 = self.p4_2(self.p4_1(x))
        # Concatenate the outputs on the channel dimension
        return np.concatenate((p1, p2, p3, p4), axis=1)


def _book_googlenet():
    b1 = nn.Sequential()
    b1.add(nn.Conv2D(64, kernel_size=7, strides=2, padding=3, activation='relu'),
           nn.MaxPool2D(pool_size=3, strides=2, padding=1))

    b2 = nn.Sequential()
    b2.add(nn.Conv2D(64, kernel_size=1, activation='relu'),
           nn.Conv2D(192, kernel_size=3, padding=1, activation='relu'),
           nn.MaxPool2D(pool_size=3, strides=2, padding=1))

    b3 = nn.Sequential()
    b3.add(Inception(64, (96, 128), (16, 32), 32),
           Inception(128, (128, 192), (32, 96), 64),
           nn.MaxPool2D(pool_size=3, strides=2, padding=1))

    b4 = nn.Sequential()
    b4.add(Inception(192, (96, 208), (16, 48), 64),
           Inception(160, (112, 224), (24, 64), 64),
           Inception(128, (128, 256), (24, 64), 64),
           Inception(112, (144, 288), (32, 64), 64),
           Inception(256, (160, 320), (32, 128), 128),
           nn.MaxPool2D(pool_size=3, strides=2, padding=1))

    b5 = nn.Sequential()
    b5.add(Inception(256, (160, 320), (32, 128), 128),
           Inception(384, (192, 384), (48, 128), 128),
           nn.GlobalAvgPool2D())

    net = nn.Sequential()
    net.add(b1, b2, b3, b4, b5, nn.Dense(10))
    return net


# ----------------------------------------------------------------- helpers for the checks
def book_net(device=None):
    """The book's net, initialised as ``d2l.train_ch6`` does (``init.Xavier()``), with
    its deferred shapes materialised by one 1x1x96x96 forward pass."""
    device = device or d2l.try_gpu()
    net = _book_googlenet()
    net.initialize(force_reinit=True, ctx=device, init=init.Xavier())
    net(np.zeros((1, 1, 96, 96), ctx=device))
    return net


_CONVS = ("p1_1", "p2_1", "p2_2", "p3_1", "p3_2", "p4_2")


def to_canonical(net):
    """The book's parameters under the table's canonical names (``b1.conv1.weight``, ...,
    ``head.dense1.bias``), in table order; Gluon's layouts are the canonical ones."""
    from common.net import spec as S, weights as W
    spec = S.googlenet("d2l")
    out = OrderedDict()

    def put(name, layer):
        out[f"{name}.weight"] = layer.weight.data().asnumpy()
        out[f"{name}.bias"] = layer.bias.data().asnumpy()

    # The book's b1..b5 are our stages b1..b5 layer for layer (our b5 adds an explicit
    # Flatten, which the book's Dense does implicitly); its Dense(10) is our head.dense1.
    for st, book_stage in zip(spec.stages[:5], list(net)[:5]):
        for (name, layer), block in zip(st.layers, book_stage):
            if layer.kind == "conv":
                put(f"{st.name}.{name}", block)
            elif layer.kind == "inception":
                for conv in _CONVS:
                    put(f"{st.name}.{name}.{conv}", getattr(block, conv))
    put("head.dense1", net[5])
    return W.check(spec, out)


def book_logits(net, X):
    """The book net's logits for a NumPy NCHW batch, as NumPy."""
    device = list(net.collect_params().values())[0].list_ctx()[0]
    return net(np.array(onp.asarray(X, onp.float32), ctx=device)).asnumpy()


def make_book_step(net, lr=0.1):
    """``step(X, y)``: one training step exactly as ``d2l.train_ch6``'s inner loop
    (softmax cross-entropy, ``gluon.Trainer('sgd')``, ``autograd.record``,
    ``trainer.step(batch_size)``) on NumPy inputs; returns (summed loss, correct)."""
    device = list(net.collect_params().values())[0].list_ctx()[0]
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': lr})

    def step(X, y):
        X = np.array(onp.asarray(X, onp.float32), ctx=device)
        y = np.array(onp.asarray(y, onp.int32), dtype=onp.int32, ctx=device)
        with autograd.record():
            y_hat = net(X)
            l = loss(y_hat, y)
        l.backward()
        trainer.step(X.shape[0])
        return float(l.sum()), d2l.accuracy(y_hat, y)

    return step


# ----------------------------------------------------------------- the book's earlier nets
# Chapter 8's exercise 3 compares GoogLeNet's parameters with AlexNet's, VGG's and NiN's:
# their d2l 1.0.3 MXNet code (chapters 8.1 to 8.3), each class's ``self.net`` as the book
# writes it (initialised with ``init.Xavier()``), returned by a function.  Gluon defers the
# parameters' shapes to the first forward pass (the book's ``layer_summary((1, 1, 224, 224))``).
# tests/test_classic.py counts them against the presets ``d2l_alexnet``, ``d2l_vgg11`` and
# ``d2l_nin``.
def alexnet(num_classes=10):
    """d2l 8.1 ``AlexNet().net`` (its first conv is unpadded here, padded by 1 in the PyTorch
    tab: the same 54x54 map at 224; Gluon's ``Dense`` flattens its input itself)."""
    net = nn.Sequential()
    net.add(
        nn.Conv2D(96, kernel_size=11, strides=4, activation='relu'),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Conv2D(256, kernel_size=5, padding=2, activation='relu'),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Conv2D(384, kernel_size=3, padding=1, activation='relu'),
        nn.Conv2D(384, kernel_size=3, padding=1, activation='relu'),
        nn.Conv2D(256, kernel_size=3, padding=1, activation='relu'),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
        nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
        nn.Dense(num_classes))
    net.initialize(init.Xavier())
    return net


def vgg_block(num_convs, num_channels):
    blk = nn.Sequential()
    for _ in range(num_convs):
        blk.add(nn.Conv2D(num_channels, kernel_size=3,
                          padding=1, activation='relu'))
    blk.add(nn.MaxPool2D(pool_size=2, strides=2))
    return blk


def vgg(arch, num_classes=10):
    """d2l 8.2 ``VGG(arch).net``; the chapter's VGG-11 is
    ``arch=((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))``."""
    net = nn.Sequential()
    for (num_convs, num_channels) in arch:
        net.add(vgg_block(num_convs, num_channels))
    net.add(nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
            nn.Dense(4096, activation='relu'), nn.Dropout(0.5),
            nn.Dense(num_classes))
    net.initialize(init.Xavier())
    return net


def nin_block(num_channels, kernel_size, strides, padding):
    blk = nn.Sequential()
    blk.add(nn.Conv2D(num_channels, kernel_size, strides, padding,
                      activation='relu'),
            nn.Conv2D(num_channels, kernel_size=1, activation='relu'),
            nn.Conv2D(num_channels, kernel_size=1, activation='relu'))
    return blk


def nin(num_classes=10):
    """d2l 8.3 ``NiN().net``."""
    net = nn.Sequential()
    net.add(
        nin_block(96, kernel_size=11, strides=4, padding=0),
        nn.MaxPool2D(pool_size=3, strides=2),
        nin_block(256, kernel_size=5, strides=1, padding=2),
        nn.MaxPool2D(pool_size=3, strides=2),
        nin_block(384, kernel_size=3, strides=1, padding=1),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Dropout(0.5),
        nin_block(num_classes, kernel_size=3, strides=1, padding=1),
        nn.GlobalAvgPool2D(),
        nn.Flatten())
    net.initialize(init.Xavier())
    return net


def layer_summary(net, X_shape=(1, 1, 224, 224)):
    """``d2l.Classifier.layer_summary`` as a function: one forward pass, layer by layer (which
    gives the deferred parameters their shapes); each top-level layer's class name and output
    shape, returned instead of printed."""
    X = np.random.normal(size=X_shape)
    rows = []
    for layer in net:
        X = layer(X)
        rows.append((layer.__class__.__name__, tuple(X.shape)))
    return rows
