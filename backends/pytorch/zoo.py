"""torchvision's model zoo (``torchvision.models``), read into the table's canonical weights.

torchvision cannot be imported beside the CPU PyTorch pinned here (its compiled ops need CUDA
libraries), so ``tests/test_zoo.py`` runs these two models only where ``torchvision`` imports
(``REQUIRES``), as on a GPU machine whose PyTorch comes with it; docs/family.md says the check is
pending until then.  The same interface as the other backends' ``zoo.py``; torchvision is
imported inside the functions, so this module imports without it.

torchvision facts: ``named_modules()`` lists modules in creation order, but GoogLeNet creates
its aux heads (``aux1``, ``aux2``) after 5b and before ``fc``, Inception3 its ``AuxLogits``
after Mixed_6e: the table lists aux heads last, so the reader moves them there.  Conv weights
OIHW, ``Linear`` (out, in); BN ``running_mean`` / ``running_var``.  In evaluation mode both
models return the logits alone.  Preprocessing: ``transforms.ToTensor`` then ``Normalize`` by
ImageNet's mean and std (``transform_input=False``, the default with random weights).
"""
import numpy as np
import torch
from torch import nn

from common.net import zoo as Z
from common.net.family import IMAGENET_MEAN, IMAGENET_STD
from common.net.spec import get_spec

NAME = "pytorch"
#: the package the zoo needs beside the framework
REQUIRES = "torchvision"
AUX = ("aux1", "aux2", "AuxLogits")


def _googlenet(seed=0):
    import torchvision
    torch.manual_seed(int(seed))
    return torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).eval()


def _inception_v3(seed=0):
    import torchvision
    torch.manual_seed(int(seed))
    return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True).eval()


def _imagenet_preprocess(images):
    from torchvision import transforms as T
    to_tensor, normalize = T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    return np.stack([normalize(to_tensor(np.asarray(im, np.uint8))).numpy() for im in images])


MODELS = {
    "googlenet": Z.ZooModel("googlenet", "tv_googlenet", _googlenet, _imagenet_preprocess, 224),
    "inception_v3": Z.ZooModel("inception_v3", "tv_inception_v3", _inception_v3, _imagenet_preprocess, 299),
}


def _param_layers(model):
    kinds = {nn.Conv2d: "conv", nn.Linear: "dense", nn.BatchNorm2d: "bn"}
    found = [(name, m, kinds[type(m)]) for name, m in model.named_modules() if type(m) in kinds]
    is_aux = lambda name: name.split(".")[0] in AUX
    return [f for f in found if not is_aux(f[0])] + [f for f in found if is_aux(f[0])]


def _np(t):
    return None if t is None else t.detach().cpu().numpy().copy()


def _tensors(m, kind):
    if kind in ("conv", "dense"):
        return dict(weight=_np(m.weight), bias=_np(m.bias))
    return dict(scale=_np(m.weight), shift=_np(m.bias), mean=_np(m.running_mean), var=_np(m.running_var))


def layers(model):
    """The model's conv / dense layers (each with its batch norm), aux heads last, canonical."""
    return Z.attach_bn((kind, name, _tensors(m, kind)) for name, m, kind in _param_layers(model))


def read(model, spec):
    spec = get_spec(spec)
    return Z.canonical(spec, layers(model), zoo=f"torchvision {type(model).__name__}")


def outputs(model, batch):
    model.eval()
    with torch.no_grad():
        return {"logits": model(torch.from_numpy(np.asarray(batch, np.float32))).numpy()}


def _measure(model, batch, bns):
    """Running statistics := the batch's (training-mode forward with momentum 1)."""
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.asarray(batch, np.float32)))
    finally:
        model.eval()
        for bn, m in zip(bns, momenta):
            bn.momentum = m


def randomize(model, seed=0, batch=None):
    """Random biases and batch-norm tensors around ``batch``'s statistics
    (:func:`common.net.zoo.randomize`), so that a swapped tensor shows."""
    found = _param_layers(model)
    bns = [m for _, m, kind in found if kind == "bn"]

    def copy(t):
        def write(a):
            with torch.no_grad():
                t.copy_(torch.from_numpy(a))
        return write

    def write_bn(m):
        def write(d):
            for t, key in ((m.weight, "scale"), (m.bias, "shift"), (m.running_mean, "mean"),
                           (m.running_var, "var")):
                if t is not None:
                    copy(t)(d[key])
        return write

    Z.randomize(seed, [(m.bias.shape[0], copy(m.bias)) for _, m, kind in found
                       if kind != "bn" and m.bias is not None],
                [(lambda b=b: (_np(b.running_mean), _np(b.running_var)), b.weight is not None, write_bn(b))
                 for b in bns],
                (lambda: _measure(model, batch, bns)) if batch is not None else None)
    return model


#: the suffix of the zoo's own weight files
SUFFIX = ".pth"


def save(model, path):
    """The zoo model's weights in the zoo's own published format (``torch.save(state_dict)``, zip)."""
    torch.save(model.state_dict(), path)


def count(model):
    """Parameters as torchvision counts them (``parameters()``: running statistics excluded)."""
    return int(sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------- the benchmark's peer
def _bench_classes():
    """torchvision's model classes: its package where it imports, else the copy vendored for
    the tests (``tests/vendor/torchvision``, torchvision 0.29.1's classes unchanged), which a
    checkout has; (GoogLeNet, Inception3, where they came from)."""
    try:
        import torchvision.models as tvm
        return tvm.GoogLeNet, tvm.Inception3, f"torchvision {__import__('torchvision').__version__}"
    except Exception:                    # ImportError, or its compiled ops failing beside the CPU torch
        try:
            from tests.vendor.torchvision import googlenet as G, inception as I
        except ImportError:
            return None, None, "torchvision does not import here and no vendored copy was found"
        return G.GoogLeNet, I.Inception3, ("torchvision 0.29.1's model classes vendored in tests/vendor "
                                           "(torchvision does not import beside the pinned torch)")


def bench_peer(name, input_size, num_classes=1000, lr=0.1, seed=0):
    """torchvision's ``name`` trained as its documentation shows: NCHW float32 (no
    channels-last, no autocast), ``model.train()``, ``torch.optim.SGD``, cross-entropy of the
    logits plus 0.3 x each aux head's (the Trainer's weight); inference under ``no_grad`` in
    ``eval()``.  (train(X, y) -> loss, infer(X) -> logits, what it is)."""
    googlenet, inception3, where = _bench_classes()
    if googlenet is None:
        raise RuntimeError(where)
    torch.manual_seed(int(seed))
    cls = {"googlenet": googlenet, "inception_v3": inception3}[name]
    model = cls(num_classes=num_classes, aux_logits=True, init_weights=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    ce = nn.CrossEntropyLoss()

    def train(X, y):
        model.train()
        x, t = torch.from_numpy(X), torch.from_numpy(y)
        out = model(x)
        heads = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
        loss = ce(heads[0], t) + 0.3 * sum(ce(h, t) for h in heads[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    def infer(X):
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(X)).numpy()
    return train, infer, f"{cls.__name__} ({where})"
