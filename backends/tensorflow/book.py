"""The book's TensorFlow GoogLeNet, exactly as d2l writes it (d2l-zh 7.4 / d2l-en 8.4,
"Networks with Parallel Concatenations", the tensorflow tab), plus the glue the
book-parity tests and the benchmark need: :func:`book_net`, :func:`to_canonical`,
:func:`book_logits`, :func:`make_book_step`.

Note: the book uses ``padding='same'``, which TensorFlow pads asymmetrically for the
stride-2 layers (b1's 7x7/2 conv and the four 3x3/2 pools on even inputs: 0 before,
1 after for a pool on 48, 2 before, 3 after for the conv on 96).  So at 96x96 its
logits differ from ours (and PyTorch's, MXNet's) for the same weights.  Where every
stride-2 layer gets an odd input (97x97: 97, 49, 25, 13, 7), 'same' is symmetric and
the book's net computes exactly our function; ``book_net(symmetric=True)`` pads those
five layers symmetrically and matches ours at 96x96 too.
"""
from collections import OrderedDict

import numpy as np
import tensorflow as tf
from d2l import tensorflow as d2l  # noqa: F401  (the book's import; its train_ch6 is mirrored below)

from common.net import spec as S, weights as W


# --------------------------------------------------------------------------- the book's code
class Inception(tf.keras.Model):
    # `c1`--`c4` are the number of output channels for each path
    def __init__(self, c1, c2, c3, c4):
        super().__init__()
        self.p1_1 = tf.keras.layers.Conv2D(c1, 1, activation='relu')
        self.p2_1 = tf.keras.layers.Conv2D(c2[0], 1, activation='relu')
        self.p2_2 = tf.keras.layers.Conv2D(c2[1], 3, padding='same',
                                           activation='relu')
        self.p3_1 = tf.keras.layers.Conv2D(c3[0], 1, activation='relu')
        self.p3_2 = tf.keras.layers.Conv2D(c3[1], 5, padding='same',
                                           activation='relu')
        self.p4_1 = tf.keras.layers.MaxPool2D(3, 1, padding='same')
        self.p4_2 = tf.keras.layers.Conv2D(c4, 1, activation='relu')

    def call(self, x):
        p1 = self.p1_1(x)
        p2 = self.p2_2(self.p2_1(x))
        p3 = self.p3_2(self.p3_1(x))
        p4 = self.p4_2(self.p4_1(x))
        return tf.keras.layers.Concatenate()([p1, p2, p3, p4])


def b1():
    return tf.keras.models.Sequential([
        tf.keras.layers.Conv2D(64, 7, strides=2, padding='same',
                               activation='relu'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding='same')])


def b2():
    return tf.keras.Sequential([
        tf.keras.layers.Conv2D(64, 1, activation='relu'),
        tf.keras.layers.Conv2D(192, 3, padding='same', activation='relu'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding='same')])


def b3():
    return tf.keras.models.Sequential([
        Inception(64, (96, 128), (16, 32), 32),
        Inception(128, (128, 192), (32, 96), 64),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding='same')])


def b4():
    return tf.keras.Sequential([
        Inception(192, (96, 208), (16, 48), 64),
        Inception(160, (112, 224), (24, 64), 64),
        Inception(128, (128, 256), (24, 64), 64),
        Inception(112, (144, 288), (32, 64), 64),
        Inception(256, (160, 320), (32, 128), 128),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding='same')])


def b5():
    return tf.keras.Sequential([
        Inception(256, (160, 320), (32, 128), 128),
        Inception(384, (192, 384), (48, 128), 128),
        tf.keras.layers.GlobalAvgPool2D(),
        tf.keras.layers.Flatten()
    ])


# "net" must be a function that will be passed to "d2l.train_ch6()" so that model
# building/compiling happens within "strategy.scope()" to use the CPU/GPU devices we have
def net():
    return tf.keras.Sequential([b1(), b2(), b3(), b4(), b5(),
                                tf.keras.layers.Dense(10)])


# --------------------------------------------------------------------------- glue
#: The book's TensorFlow net pads its stride-2 layers with 'same' (asymmetric on even sizes).
SAME_PADDING = True


def _symmetric(layer):
    """A stride-2 'same' layer of the book as explicit symmetric padding + 'valid' (ours)."""
    k = layer.kernel_size[0] if hasattr(layer, "kernel_size") else layer.pool_size[0]
    pad = [[0, 0], [k // 2, k // 2], [k // 2, k // 2], [0, 0]]
    if isinstance(layer, tf.keras.layers.Conv2D):
        return [tf.keras.layers.ZeroPadding2D(k // 2),
                tf.keras.layers.Conv2D(layer.filters, k, strides=2, activation='relu')]
    return [tf.keras.layers.Lambda(lambda x: tf.pad(x, pad, constant_values=float('-inf'))),
            tf.keras.layers.MaxPool2D(pool_size=k, strides=2)]


def book_net(symmetric=False, weights=None):
    """The book's model, built for a 1x96x96 input (Keras's default initialisers).

    Args:
        symmetric: replace the five stride-2 'same' layers (b1's conv, the pools of b1 to
            b4) by symmetric padding + 'valid', as in the table; everything else as written.
        weights: a book model whose weights are copied in (same order either way).
    """
    model = net()
    if symmetric:
        model = tf.keras.Sequential([
            tf.keras.Sequential([new for layer in block.layers
                                 for new in (_symmetric(layer) if getattr(layer, "strides", (1,))[0] == 2
                                             else [layer])])
            for block in model.layers[:5]] + [model.layers[5]])
    model(tf.zeros((1, 96, 96, 1)))
    if weights is not None:
        model.set_weights(weights.get_weights())
    return model


def _put(out, name, layer):
    kernel, bias = layer.get_weights()
    out[f"{name}.weight"] = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
    out[f"{name}.bias"] = bias


def to_canonical(model):
    """The book's weights under the table's canonical names and layouts (OIHW, (out, in))."""
    spec = S.googlenet("d2l")
    out = OrderedDict()
    stages = list(model.layers[:5]) + [[model.layers[5]]]
    for st, book in zip(spec.stages, stages):
        for (name, layer), book_layer in zip(st.layers, getattr(book, "layers", book)):
            qname = f"{st.name}.{name}"
            if layer.kind in ("conv", "dense"):
                _put(out, qname, book_layer)
            elif layer.kind == "inception":
                for branch in layer.branches():
                    for sub, prim in branch:
                        if prim.kind == "conv":
                            _put(out, f"{qname}.{sub}", getattr(book_layer, sub))
    return W.check(spec, out)


def book_logits(model, X):
    """Logits of the book's model for a NumPy NCHW batch, as NumPy."""
    X = np.asarray(X, np.float32).transpose(0, 2, 3, 1)
    return model(tf.constant(X), training=False).numpy()


def make_book_step(model, lr=0.1):
    """One training step as the book's ``d2l.train_ch6`` runs it.

    ``train_ch6`` compiles the net with ``SGD(learning_rate=lr)`` and
    ``SparseCategoricalCrossentropy(from_logits=True)`` (metric ``'accuracy'``) and calls
    ``net.fit``, whose per-batch work is Keras's ``train_step`` (forward and loss under a
    ``GradientTape``, then ``apply_gradients``) in a ``tf.function``; ``train_on_batch``
    runs exactly that step on one batch.  (``train_ch6`` also builds the net inside a
    ``OneDeviceStrategy`` scope, which changes nothing on a single device.)
    Returns ``step(X, y)`` for NumPy NCHW images and integer labels; it returns the loss.
    """
    optimizer = tf.keras.optimizers.SGD(learning_rate=lr)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=['accuracy'])

    def step(X, y):
        X = np.asarray(X, np.float32).transpose(0, 2, 3, 1)
        return model.train_on_batch(X, np.asarray(y, np.int32), return_dict=True)["loss"]
    return step


# --------------------------------------------------------------------------- the book's earlier nets
# Chapter 8's exercise 3 compares GoogLeNet's parameters with AlexNet's, VGG's and NiN's:
# their d2l 1.0.3 TensorFlow code (chapters 8.1 to 8.3), each class's ``self.net`` as the
# book writes it, returned by a function.  Keras creates the weights when the model is built
# for an input shape (the book's ``layer_summary((1, 224, 224, 1))``).  tests/test_classic.py
# counts them against the presets ``d2l_alexnet``, ``d2l_vgg11`` and ``d2l_nin``.
def alexnet(num_classes=10):
    """d2l 8.1 ``AlexNet().net`` (its first conv is unpadded here, padded by 1 in the PyTorch
    tab: the same 54x54 map at 224)."""
    return tf.keras.models.Sequential([
        tf.keras.layers.Conv2D(filters=96, kernel_size=11, strides=4,
                               activation='relu'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Conv2D(filters=256, kernel_size=5, padding='same',
                               activation='relu'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Conv2D(filters=384, kernel_size=3, padding='same',
                               activation='relu'),
        tf.keras.layers.Conv2D(filters=384, kernel_size=3, padding='same',
                               activation='relu'),
        tf.keras.layers.Conv2D(filters=256, kernel_size=3, padding='same',
                               activation='relu'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(4096, activation='relu'),
        tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(4096, activation='relu'),
        tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(num_classes)])


def vgg_block(num_convs, num_channels):
    blk = tf.keras.models.Sequential()
    for _ in range(num_convs):
        blk.add(
            tf.keras.layers.Conv2D(num_channels, kernel_size=3,
                                   padding='same', activation='relu'))
    blk.add(tf.keras.layers.MaxPool2D(pool_size=2, strides=2))
    return blk


def vgg(arch, num_classes=10):
    """d2l 8.2 ``VGG(arch).net``; the chapter's VGG-11 is
    ``arch=((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))``."""
    net = tf.keras.models.Sequential()
    for (num_convs, num_channels) in arch:
        net.add(vgg_block(num_convs, num_channels))
    net.add(
        tf.keras.models.Sequential([
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(4096, activation='relu'),
            tf.keras.layers.Dropout(0.5),
            tf.keras.layers.Dense(4096, activation='relu'),
            tf.keras.layers.Dropout(0.5),
            tf.keras.layers.Dense(num_classes)]))
    return net


def nin_block(out_channels, kernel_size, strides, padding):
    return tf.keras.models.Sequential([
        tf.keras.layers.Conv2D(out_channels, kernel_size, strides=strides,
                               padding=padding),
        tf.keras.layers.Activation('relu'),
        tf.keras.layers.Conv2D(out_channels, 1),
        tf.keras.layers.Activation('relu'),
        tf.keras.layers.Conv2D(out_channels, 1),
        tf.keras.layers.Activation('relu')])


def nin(num_classes=10):
    """d2l 8.3 ``NiN().net``."""
    return tf.keras.models.Sequential([
        nin_block(96, kernel_size=11, strides=4, padding='valid'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        nin_block(256, kernel_size=5, strides=1, padding='same'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        nin_block(384, kernel_size=3, strides=1, padding='same'),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Dropout(0.5),
        nin_block(num_classes, kernel_size=3, strides=1, padding='same'),
        tf.keras.layers.GlobalAvgPool2D(),
        tf.keras.layers.Flatten()])


def layer_summary(net, X_shape=(1, 224, 224, 1)):
    """``d2l.Classifier.layer_summary`` as a function, without computing: each top-level
    layer's class name and output shape (NHWC) for an input of ``X_shape``, from Keras's shape
    inference; the layers are built (their weights created) on the way, as by a forward pass."""
    net.build(X_shape)
    shape = tf.TensorShape(X_shape)
    rows = []
    for layer in net.layers:
        shape = layer.compute_output_shape(shape)
        rows.append((layer.__class__.__name__, tuple(shape)))
    return rows
