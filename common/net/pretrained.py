"""ImageNet weights from every framework's zoo, in every framework: where each file comes from,
what preprocessing travels with it, and how it becomes the table's weights (framework-free).

Each :class:`Source` is one published weight file, in the manner of timm's ``pretrained_cfg``:
the address and hash that the zoo's own code downloads and checks (torchvision's source, the
installed Keras, Paddle and MXNet packages), the preset of the table that reproduces the zoo's
model (with the options the weights need, such as torchvision's ``transform_input``), and the
preprocessing the weights were trained with (input size, resize and crop, mean and std,
interpolation).  ``imagenet:SOURCE`` (``imagenet:torchvision.googlenet``) names one on the
command line; a file of one of the zoo formats (:mod:`common.net.zoofiles`) is recognised by
its content, and :func:`read` finds which source's table it fits.

Downloads go to ``~/.cache/googlenet/weights`` (``$GOOGLENET_WEIGHTS``), next to Fashion-MNIST,
through :func:`common.inputs.download.fetch`: the zoo's own hash is checked, a progress bar
shows, nothing half-written is ever left, and offline the error names the file, its address
and the folder to put it in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional, Tuple

from . import zoofiles as ZF
from .family import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD
from .spec import get_spec
from .weights import WeightsMismatch
from .zoo import ZooMismatch, canonical

__all__ = ["Source", "SOURCES", "ENV_WEIGHTS", "ENV_MIRROR", "weights_dir", "source", "locate", "read",
           "imagenet_classes", "PretrainedError", "TOKEN"]

ENV_WEIGHTS = "GOOGLENET_WEIGHTS"
#: a folder URL that serves the zoos' files under their own names, in place of their addresses
#: (a local mirror; the tests' HTTP server on 127.0.0.1), as MXNet's MXNET_GLUON_REPO
ENV_MIRROR = "GOOGLENET_WEIGHTS_MIRROR"
TOKEN = "imagenet:"
CLASSES_FILE = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")


class PretrainedError(WeightsMismatch):
    """An unknown source, or a file that fits none of its format's sources."""


@dataclass(frozen=True)
class Source:
    """One published ImageNet weight file and what travels with it.

    ``hash``: (algorithm, hex digest) as the zoo's own code checks it: ``sha256`` with a
    prefix (torchvision: the digest's first 8 hex digits, in the file name), ``md5`` (Keras,
    Paddle), ``sha1`` (Gluon, of the ``.params`` inside the zip it downloads: ``member``).
    ``resize``: ``'shorter'`` scales the shorter side to ``resize_to`` and crops the centre to
    ``input_size`` (torchvision's, Paddle's and Gluon's evaluation transforms); ``'squash'``
    scales the whole picture to ``input_size`` (Keras's ``load_img(target_size=...)``).
    ``aux``: the zoo's names of its aux heads (moved last, as the table lists them)."""
    name: str
    preset: str
    format: str
    url: str
    hash: Tuple[str, str]
    input_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    resize: str = "shorter"
    resize_to: Optional[int] = None
    interpolation: str = "bilinear"
    options: dict = field(default_factory=dict)
    member: Optional[str] = None
    aux: Tuple[str, ...] = ()
    origin: str = ""
    num_classes: int = 1000

    @property
    def file(self) -> str:
        """The file's name in the cache (the zoo's own name)."""
        return self.member or self.url.rsplit("/", 1)[-1]

    @property
    def model(self) -> dict:
        """The model options of a run (``cli.options.spec_of``) that take these weights as they are."""
        return dict(preset=self.preset, in_channels=3, num_classes=self.num_classes, **self.options)

    def spec(self, **options):
        return get_spec(self.preset, in_channels=3, num_classes=self.num_classes, **{**self.options, **options})

    @property
    def preprocessing(self) -> dict:
        """What a picture goes through before the net (``common.serve.predict.prepare_pretrained``)."""
        return dict(channels=3, size=self.input_size, fit=self.resize,
                    resize_to=self.resize_to or self.input_size, interpolation=self.interpolation,
                    normalize=True, mean=list(self.mean), std=list(self.std))

    def describe(self) -> str:
        return (f"{self.name}: {self.origin}, preset {self.preset}, {self.input_size}x{self.input_size}, "
                f"{self.file} ({self.hash[0]} {self.hash[1]})")


_TV = "https://download.pytorch.org/models/"
_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KERAS_NOTE = "tf.keras.applications.{} (Keras's own get_file address and md5)"


def _keras(name: str, model: str, md5: str, md5_notop: str) -> Tuple[Source, Source]:
    """A Keras application's two files, with and without its top: the same folder, preset and
    preprocessing; ``_notop`` in the name and the file, ``include_top=False``."""
    def one(suffix, md5, options, call):
        return Source(f"keras.{name}{suffix}", f"keras_{name}", "keras-h5",
                      f"{_KERAS}{name}/{name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5", ("md5", md5), 299,
                      INCEPTION_MEAN, INCEPTION_STD, resize="squash", interpolation="nearest", options=options,
                      origin=_KERAS_NOTE.format(f"{model}(weights='imagenet'{call})"))
    return one("", md5, {}, ""), one("_notop", md5_notop, dict(include_top=False), ", include_top=False")


SOURCES = {s.name: s for s in (
    # torchvision/models/googlenet.py and inception.py (0.29): ImageClassification(crop_size=224)
    # = resize 256, centre crop 224, bilinear; the weights need transform_input=True
    Source("torchvision.googlenet", "tv_googlenet", "torch", _TV + "googlenet-1378be20.pth",
           ("sha256", "1378be20"), 224, IMAGENET_MEAN, IMAGENET_STD, resize_to=256,
           options=dict(aux_logits=True, transform_input=True), aux=("aux1", "aux2"),
           origin="torchvision.models.googlenet(weights='IMAGENET1K_V1')"),
    Source("torchvision.inception_v3", "tv_inception_v3", "torch", _TV + "inception_v3_google-0cc3c7bd.pth",
           ("sha256", "0cc3c7bd"), 299, IMAGENET_MEAN, IMAGENET_STD, resize_to=342,
           options=dict(aux_logits=True, transform_input=True), aux=("AuxLogits",),
           origin="torchvision.models.inception_v3(weights='IMAGENET1K_V1')"),
    # keras/src/applications/inception_v3.py, inception_resnet_v2.py (TF 2.15): preprocess_input
    # mode 'tf' (x / 127.5 - 1); Keras's examples load pictures with load_img(target_size=(299, 299))
    # (nearest-neighbour, no crop)
    *_keras("inception_v3", "InceptionV3", "9a0d58056eeedaa3f26cb7ebd46da564", "bcbd6486424b2319ff4ef7d526e38f63"),
    *_keras("inception_resnet_v2", "InceptionResNetV2", "e693bd0210a403b3192acc6073ad2e96",
            "d19885ff4a710c122648d3b5c3b684e4"),
    # paddle/vision/models/googlenet.py, inceptionv3.py (3.3.1): model_urls (address, md5)
    Source("paddle.googlenet", "paddle_googlenet", "pdparams",
           "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/GoogLeNet_pretrained.pdparams",
           ("md5", "80c06f038e905c53ab32c40eca6e26ae"), 224, IMAGENET_MEAN, IMAGENET_STD, resize_to=256,
           origin="paddle.vision.models.googlenet(pretrained=True)"),
    Source("paddle.inception_v3", "paddle_inception_v3", "pdparams",
           "https://paddle-hapi.bj.bcebos.com/models/inception_v3.pdparams",
           ("md5", "649a4547c3243e8b59c656f41fe330b8"), 299, IMAGENET_MEAN, IMAGENET_STD, resize_to=342,
           origin="paddle.vision.models.inception_v3(pretrained=True)"),
    # mxnet/gluon/model_zoo/model_store.py (1.9.1): a zip from the Apache repository holding
    # inceptionv3-<sha1[:8]>.params, whose sha1 is checked
    Source("gluon.inception_v3", "gluon_inception_v3", "gluon-params",
           "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/models/inceptionv3-ed47ec45.zip",
           ("sha1", "ed47ec45a937b656fcc94dabde85495bbef5ba1f"), 299, IMAGENET_MEAN, IMAGENET_STD,
           resize_to=342, member="inceptionv3-ed47ec45.params",
           origin="mxnet.gluon.model_zoo.vision.inception_v3(pretrained=True)"),
)}


def weights_dir() -> str:
    """``$GOOGLENET_WEIGHTS``, else ``~/.cache/googlenet/weights`` (next to Fashion-MNIST)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(ENV_WEIGHTS) or os.path.join(
        os.path.expanduser("~"), ".cache", "googlenet", "weights")))


def source(name: str) -> Source:
    """The source named ``name`` (``imagenet:`` in front accepted)."""
    key = name[len(TOKEN):] if name.startswith(TOKEN) else name
    if key not in SOURCES:
        raise PretrainedError(f"unknown ImageNet weights {name!r}; choose one of "
                              + ", ".join(TOKEN + k for k in SOURCES))
    return SOURCES[key]


def locate(name: str, download: bool = True, progress: bool = True) -> str:
    """The path of a source's file in the cache, downloaded (and its hash checked) if missing."""
    from ..inputs import download as DL          # urllib and tqdm only when a file is fetched
    s = source(name)
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    url = mirror.rstrip("/") + "/" + s.url.rsplit("/", 1)[-1] if mirror else s.url
    return DL.fetch_file(url, weights_dir(), s.file, s.hash, member=s.member, download=download,
                         progress=progress, what=f"the ImageNet weights {TOKEN}{s.name} ({s.origin})")


def _formats_sources(fmt: str):
    return [s for s in SOURCES.values() if s.format == fmt]


def read(path: str, name: Optional[str] = None):
    """``(source, weights)``: a zoo file's weights in the table's names, checked as a whole, for
    the source ``name`` or, without one, the first source of the file's format whose table the
    file fits.  Without its aux heads a torchvision state dict fits too (they are left out)."""
    fmt = ZF.detect(path) if os.path.isfile(path) else None
    candidates = [source(name)] if name else _formats_sources(fmt)
    if not candidates:
        ZF.read_arrays(path)                     # the reader's one line: not a zoo file
    _, layers = ZF.zoo_layers(path, candidates[0].format, aux=sum((s.aux for s in candidates), ()))
    why = []
    for s in candidates:
        for options in ({}, dict(aux_logits=False)) if s.aux else ({},):
            spec = s.spec(**options)
            try:
                return (s if not options else _without_aux(s)), canonical(spec, layers, zoo=s.origin)
            except ZooMismatch as e:
                why.append(f"{s.name}{' without aux heads' if options else ''}: {e}")
    raise PretrainedError(f"{path} fits none of the {fmt} sources ({', '.join(s.name for s in candidates)}); "
                          f"the first: {why[0]}")


def _without_aux(s: Source) -> Source:
    from dataclasses import replace
    return replace(s, options={**s.options, "aux_logits": False})


@lru_cache(maxsize=1)
def imagenet_classes() -> Tuple[str, ...]:
    """The 1,000 ImageNet classes in the zoos' order (index 0 'tench' ... 999 'toilet tissue'),
    the names torchvision's model metadata gives them."""
    with open(CLASSES_FILE, encoding="utf-8") as f:
        names = tuple(line.rstrip("\n") for line in f if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"{CLASSES_FILE}: {len(names)} class names, not 1000")
    return names
