"""The zoos' own published weight files, read into the table's canonical weights, framework-free.

Four formats, each read without its framework and without running anything from the file:

* **Keras ``.h5``** (``model.save_weights('x.h5')``, the files ``tf.keras.applications``
  downloads): HDF5 read with ``h5py``; the root's ``layer_names`` and each layer's
  ``weight_names`` list the arrays.  Conv kernels HWIO, dense kernels (in, out).
* **Paddle ``.pdparams``** (``paddle.save(model.state_dict())``): a pickle of name -> array,
  read with the restricted unpickler (:mod:`common.net.safepickle`).  Conv OIHW, a
  ``Linear``'s weight (in, out); batch norm ``weight``, ``bias``, ``_mean``, ``_variance``.
* **Gluon ``.params``** (``save_parameters``, the model store's files): MXNet's NDArray list
  format, parsed here (a header, the arrays, their names).  Conv OIHW, dense (out, in); batch
  norm ``gamma``, ``beta``, ``running_mean``, ``running_var``.
* **PyTorch ``.pth``** (``torch.save(model.state_dict())``, torchvision's files): a zip
  holding a pickle whose tensors point into raw storage members; the pickle is read with the
  restricted unpickler, which knows only how to rebuild a tensor from its storage as a NumPy
  array (no ``torch`` needed).  The pre-1.6 non-zip format (a sequence of pickles, then the raw
  storages) is read in the same way.

Every reader lists the file's conv / dense layers (each with its batch norm) in the zoo's
creation order and hands them to :func:`common.net.zoo.canonical`, which matches them one by
one with the table's records and checks every shape: a file that does not fit raises one
:class:`~common.net.zoo.ZooMismatch` line naming the zoo's layer and ours.

The order.  A state dict (PyTorch, Paddle, Gluon) lists its layers in creation order, aux
heads where the model creates them (torchvision: before the classifier; the table lists them
last, so they are moved).  A Keras file lists its layers by depth: the creation order is
restored from Keras's automatic names (``conv2d_12`` was created after ``conv2d_11``); a layer
named by the model's code (Inception-ResNet-v2's ``block35_1_conv``) was created after every
layer it depends on, which the file lists before it.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import safepickle
from .weights import WeightsError
from .zoo import ZooLayer, ZooMismatch, attach_bn

__all__ = ["FORMATS", "detect", "read_arrays", "zoo_layers", "ZooFileError"]

#: format -> (what it is, the suffixes its files carry)
FORMATS = {
    "keras-h5": ("a Keras HDF5 weight file", (".h5", ".hdf5")),
    "pdparams": ("a Paddle state dict", (".pdparams",)),
    "gluon-params": ("a Gluon / MXNet parameter file", (".params",)),
    "torch": ("a PyTorch state dict", (".pth", ".pt")),
}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MXNET_LIST_MAGIC = 0x112
MXNET_ARRAY_MAGICS = (0xF993FAC9, 0xF993FACA)        # NDArray V2, V3 (NumPy shapes)
MXNET_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8,
                6: np.int64, 7: np.bool_}
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class ZooFileError(WeightsError):
    """A file that is not one of the zoos' formats, or a damaged one."""


# --------------------------------------------------------------------------- detection
def detect(path: str) -> Optional[str]:
    """The format of ``path`` from its first bytes (``None``: none of :data:`FORMATS`)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(HDF5_MAGIC):
        return "keras-h5"
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if len(head) >= 8 and struct.unpack("<Q", head[:8])[0] == MXNET_LIST_MAGIC:
        return "gluon-params"
    if head[:1] == b"\x80":                 # a pickle: Paddle's, or PyTorch's pre-1.6 format
        return "torch" if _legacy_torch(head) else "pdparams"
    return None


def _legacy_torch(head: bytes) -> bool:
    """A pre-1.6 ``torch.save`` file begins with a pickled magic number (a long)."""
    return head[2:3] == b"\x8a" and int.from_bytes(head[4:4 + head[3]], "little") == TORCH_LEGACY_MAGIC


# --------------------------------------------------------------------------- Keras HDF5
_AUTO = re.compile(r"^(conv2d|batch_normalization|dense)(?:_(\d+))?$")


def _keras_groups(path: str) -> List[Tuple[str, Dict[str, np.ndarray]]]:
    try:
        import h5py
    except ImportError:
        raise ZooFileError(f"{path}: reading a Keras .h5 file needs h5py (pip install h5py)") from None
    out = []
    with h5py.File(path, "r") as f:
        g = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in g.attrs:
            raise ZooFileError(f"{path}: an HDF5 file but not a Keras weight file (no 'layer_names')")
        for raw in g.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            lg = g[name]
            tensors = {}
            for w in lg.attrs.get("weight_names", []):
                w = w.decode() if isinstance(w, bytes) else str(w)
                tensors[w.split("/")[-1].split(":")[0]] = np.asarray(lg[w])
            if tensors:
                out.append((name, tensors))
    return out


def keras_creation_order(names: Sequence[str], kinds: Optional[Sequence[str]] = None) -> List[int]:
    """Indices of a Keras file's layers (listed by depth) in creation order, each conv followed
    by its batch norm.  Keras numbers its automatic names with one counter per kind
    (``conv2d_12``, ``batch_normalization_40``: in a process that built other models first the
    two counters differ), so the convs and dense layers are ordered by their own counter, a
    layer named by the model's code right after the last automatic one listed before it; and
    batch norms are paired with convs the way Keras's ``conv2d_bn`` makes them: the k-th
    automatic batch norm with the k-th automatic conv, ``X_bn`` with ``X``."""
    kinds = list(kinds) if kinds is not None else [
        "bn" if n.startswith("batch_normalization") or n.endswith("_bn") else "conv" for n in names]
    keys, running = [], -1
    for i, (name, kind) in enumerate(zip(names, kinds)):
        if kind == "bn":
            continue
        m = _AUTO.match(name)
        if m:
            n = int(m.group(2) or 0)
            running = max(running, n)
            keys.append((n, 0, i))
        else:
            keys.append((running, 1, i))
    layers = [k[2] for k in sorted(keys)]
    number = lambda i: int(_AUTO.match(names[i]).group(2) or 0)                  # noqa: E731
    auto_bn = sorted((i for i, k in enumerate(kinds) if k == "bn" and _AUTO.match(names[i])), key=number)
    named_bn = {names[i][:-3]: i for i, k in enumerate(kinds) if k == "bn" and not _AUTO.match(names[i])}
    auto_convs = [i for i in layers if _AUTO.match(names[i]) and names[i].startswith("conv2d")]
    bn_of = dict(zip(auto_convs, auto_bn))
    if len(auto_bn) > len(auto_convs):
        raise ZooMismatch(f"{len(auto_bn)} automatic batch norms but {len(auto_convs)} automatic convs")
    out = []
    for i in layers:
        out.append(i)
        bn = bn_of.get(i, named_bn.get(names[i]))
        if bn is not None:
            out.append(bn)
    return out


# --------------------------------------------------------------------------- state dicts
#: per format: tensor name -> role (``weight``/``bias`` of a conv or dense; ``scale``,
#: ``shift``, ``mean``, ``var`` of a batch norm); names not listed are skipped
#: (``num_batches_tracked``)
ROLES = {
    "keras-h5": {"kernel": "weight", "bias": "bias", "gamma": "scale", "beta": "shift", "moving_mean": "mean",
                 "moving_variance": "var"},
    "torch": {"weight": "weight", "bias": "bias", "running_mean": "mean", "running_var": "var"},
    "pdparams": {"weight": "weight", "bias": "bias", "_mean": "mean", "_variance": "var"},
    "gluon-params": {"weight": "weight", "bias": "bias", "gamma": "scale", "beta": "shift",
                     "running_mean": "mean", "running_var": "var"},
}
#: per format: whether a dense weight is stored (in, out) (Paddle's ``Linear``, Keras's ``Dense``)
DENSE_IN_OUT = {"pdparams": True, "keras-h5": True}
#: per format: whether conv kernels are HWIO (Keras), not OIHW
CONV_HWIO = {"keras-h5": True}
SKIP = ("num_batches_tracked",)
_GLUON_OLD = re.compile(r"^(.*)_(weight|bias|gamma|beta|running_mean|running_var)$")


def _split(fmt: str, key: str) -> Tuple[str, str]:
    """(layer, tensor) of a state dict's key: ``features.0.conv.weight`` -> (``features.0.conv``,
    ``weight``); Gluon's older flat names ``inception30_conv0_weight`` too."""
    if fmt == "gluon-params":
        key = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        if "." not in key:
            m = _GLUON_OLD.match(key)
            if m:
                return m.group(1), m.group(2)
    layer, _, tensor = key.rpartition(".")
    return layer, tensor


def state_dict_groups(fmt: str, arrays: "OrderedDict[str, np.ndarray]") -> List[Tuple[str, Dict]]:
    """A state dict's tensors grouped by layer, in the order the layers first appear."""
    groups: "OrderedDict[str, Dict[str, np.ndarray]]" = OrderedDict()
    for key, a in arrays.items():
        layer, tensor = _split(fmt, key)
        if tensor in SKIP:
            continue
        role = ROLES[fmt].get(tensor)
        if role is None:
            raise ZooMismatch(f"{key!r}: a tensor the table has no place for")
        groups.setdefault(layer, {})[role] = a
    return list(groups.items())


def _state_layer(fmt: str, name: str, t: Dict[str, np.ndarray]):
    """(kind, canonical tensors) of one layer's tensors by role; a batch norm's ``weight`` and
    ``bias`` (PyTorch's, Paddle's names) are its scale and shift."""
    if "mean" in t:
        c = t["mean"].shape[0]
        return "bn", dict(scale=t.get("scale", t.get("weight")),
                          shift=t.get("shift", t.get("bias", np.zeros(c, np.float32))), mean=t["mean"], var=t["var"])
    w = t.get("weight")
    if w is None or w.ndim not in (2, 4):
        raise ZooMismatch(f"layer {name!r} ({', '.join(t)}) is not a conv, dense or batch norm layer "
                          f"the table knows")
    if w.ndim == 4 and CONV_HWIO.get(fmt):
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    if w.ndim == 2 and DENSE_IN_OUT.get(fmt):
        w = np.ascontiguousarray(w.T)
    return ("conv" if w.ndim == 4 else "dense"), dict(weight=w, bias=t.get("bias"))


def state_dict_layers(fmt: str, arrays, aux: Sequence[str] = ()) -> List[ZooLayer]:
    """A state dict's conv / dense layers with their batch norms, aux heads (layers whose name
    starts with one of ``aux``) moved last, as the table lists them."""
    groups = state_dict_groups(fmt, arrays)
    is_aux = lambda name: name.split(".")[0] in aux      # noqa: E731
    groups = [g for g in groups if not is_aux(g[0])] + [g for g in groups if is_aux(g[0])]
    items = []
    for name, t in groups:
        kind, tensors = _state_layer(fmt, name, t)
        items.append((kind, name, tensors))
    return attach_bn(items)


# --------------------------------------------------------------------------- Paddle
def read_pdparams(path: str) -> "OrderedDict[str, np.ndarray]":
    """A ``.pdparams`` as ``paddle.save`` writes it, by the restricted unpickler."""
    try:
        return OrderedDict(safepickle.read_paddle(path, "Paddle state dict"))
    except safepickle.PickleFileError as e:
        raise ZooFileError(str(e)) from None


# --------------------------------------------------------------------------- Gluon / MXNet
class _Reader:
    def __init__(self, raw: bytes, path: str):
        self.raw, self.pos, self.path = raw, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.raw):
            raise ZooFileError(f"{self.path}: truncated ({len(self.raw)} bytes)")
        out = struct.unpack_from(fmt, self.raw, self.pos)
        self.pos += size
        return out if len(out) > 1 else out[0]

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise ZooFileError(f"{self.path}: truncated ({len(self.raw)} bytes)")
        out = self.raw[self.pos:self.pos + n]
        self.pos += n
        return out


def _mx_array(r: _Reader) -> np.ndarray:
    magic = r.take("<I")
    if magic not in MXNET_ARRAY_MAGICS:
        raise ZooFileError(f"{r.path}: an NDArray in a format this reader does not know (magic {magic:#x}; "
                           f"MXNet >= 1.0 writes {MXNET_ARRAY_MAGICS[0]:#x})")
    stype = r.take("<i")
    if stype != 0:
        raise ZooFileError(f"{r.path}: a sparse NDArray (storage type {stype}); weights are dense")
    ndim = r.take("<i")
    if ndim < 0 or ndim > 8:
        raise ZooFileError(f"{r.path}: an NDArray with {ndim} dimensions")
    shape = tuple(r.take(f"<{ndim}q")) if ndim > 1 else ((r.take("<q"),) if ndim == 1 else ())
    if ndim == 0:
        return np.zeros((0,), np.float32)
    r.take("<ii")                                  # context: device type and id
    flag = r.take("<i")
    if flag not in MXNET_DTYPES:
        raise ZooFileError(f"{r.path}: an NDArray of MXNet type {flag}")
    dtype = np.dtype(MXNET_DTYPES[flag])
    n = int(np.prod(shape))
    return np.frombuffer(r.bytes(n * dtype.itemsize), dtype).reshape(shape).copy()


def read_gluon_params(path: str) -> "OrderedDict[str, np.ndarray]":
    with open(path, "rb") as f:
        r = _Reader(f.read(), path)
    if r.take("<Q") != MXNET_LIST_MAGIC:
        raise ZooFileError(f"{path}: not an MXNet parameter file")
    r.take("<Q")
    arrays = [_mx_array(r) for _ in range(r.take("<Q"))]
    names = [r.bytes(r.take("<Q")).decode() for _ in range(r.take("<Q"))]
    if len(names) != len(arrays):
        raise ZooFileError(f"{path}: {len(arrays)} arrays but {len(names)} names")
    return OrderedDict(zip(names, arrays))


# --------------------------------------------------------------------------- PyTorch
_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                 "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                 "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _Storage:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    data, dtype = storage
    size, stride = tuple(size), tuple(stride)
    base = np.frombuffer(data, dtype)
    if not size:
        return base[offset:offset + 1].reshape(()).copy()
    need = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1
    if min(size) > 0 and need > base.size:
        raise ZooFileError(f"a tensor of shape {size} reaches past its storage ({base.size} elements)")
    return np.lib.stride_tricks.as_strided(base[offset:], size, [s * dtype.itemsize for s in stride]).copy()


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


class _TorchUnpickler(safepickle.RestrictedUnpickler):
    """torch's zip pickle, restricted: storages (persistent ids) come from the archive's members,
    tensors are rebuilt as NumPy arrays; every other global is refused."""

    GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
               ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
               ("collections", "OrderedDict"): OrderedDict}

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str):
        super().__init__(file, encoding="utf-8")
        self.zf, self.prefix = zf, prefix

    def find_class(self, module, name):
        if (module, name) in self.GLOBALS:
            return self.GLOBALS[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return _Storage(_TORCH_DTYPES[name])
        raise safepickle.Refused(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _Storage)):
            raise safepickle.Refused("persistent id", repr(pid)[:40])
        try:
            data = self.zf.read(f"{self.prefix}data/{pid[2]}")
        except KeyError:
            raise ZooFileError(f"storage {pid[2]!r} is missing from the archive") from None
        return data, pid[1].dtype


def read_torch(path: str) -> "OrderedDict[str, np.ndarray]":
    if not zipfile.is_zipfile(path):
        return _read_torch_legacy(path)
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise ZooFileError(f"{path}: a zip file but not a PyTorch file (no data.pkl)")
            prefix = pkl[:-len("data.pkl")]
            order = f"{prefix}byteorder"
            if order in zf.namelist() and zf.read(order).decode().strip() != "little":
                raise ZooFileError(f"{path}: a big-endian PyTorch file")
            obj = _TorchUnpickler(io.BytesIO(zf.read(pkl)), zf, prefix).load()
    except safepickle.Refused as e:
        raise ZooFileError(f"{path}: {e}") from None
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as e:
        raise ZooFileError(f"{path}: a damaged PyTorch file ({type(e).__name__}: {e})") from None
    return _plain_state_dict(path, obj)


class _Pending:
    """A tensor of a pre-1.6 file whose storage comes after the pickle that names it."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _LegacyTorchUnpickler(_TorchUnpickler):
    """The pre-1.6 format: persistent ids name storages written after the pickle, by key."""

    def __init__(self, file, storages: dict):
        safepickle.RestrictedUnpickler.__init__(self, file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: _Pending(storage, offset, tuple(size), tuple(stride))
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _Storage)
                and pid[5] is None):
            raise safepickle.Refused("persistent id", repr(pid)[:40])
        self.storages.setdefault(str(pid[2]), pid[1].dtype)
        return str(pid[2])


def _read_torch_legacy(path: str):
    """PyTorch's pre-1.6 format: pickles of the magic number, the protocol, the system's
    description and the object, then the list of storage keys, then each storage (its element
    count, an int64, then its bytes) -- read with the same restrictions as the zip format."""
    storages: Dict[str, np.dtype] = {}
    try:
        with open(path, "rb") as f:
            plain = lambda: safepickle.RestrictedUnpickler(f, encoding="utf-8").load()   # noqa: E731
            if plain() != TORCH_LEGACY_MAGIC:
                raise ZooFileError(f"{path}: not a PyTorch file")
            plain()                                         # the protocol version
            plain()                                         # the system's description
            obj = _LegacyTorchUnpickler(f, storages).load()
            data = {}
            for key in plain():
                n = struct.unpack("<q", f.read(8))[0]
                dtype = storages[str(key)]
                raw = f.read(n * dtype.itemsize)
                if len(raw) != n * dtype.itemsize:
                    raise ZooFileError(f"{path}: truncated (storage {key})")
                data[str(key)] = (raw, dtype)
    except safepickle.Refused as e:
        raise ZooFileError(f"{path}: {e}") from None
    except (EOFError, ValueError, KeyError, struct.error, pickle.UnpicklingError) as e:
        raise ZooFileError(f"{path}: a damaged PyTorch file ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict):
        obj = OrderedDict((k, _rebuild_tensor_v2(data[v.storage], v.offset, v.size, v.stride)
                           if isinstance(v, _Pending) else v) for k, v in obj.items())
    return _plain_state_dict(path, obj)


def _plain_state_dict(path, obj):
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]                      # a training checkpoint holding the state dict
    if not isinstance(obj, dict):
        raise ZooFileError(f"{path}: a PyTorch file, but not a state dict (a {type(obj).__name__})")
    out = OrderedDict()
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            raise ZooFileError(f"{path}: {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    return out


# --------------------------------------------------------------------------- one door
READERS = {"pdparams": read_pdparams, "gluon-params": read_gluon_params, "torch": read_torch}


def read_arrays(path: str, fmt: Optional[str] = None):
    """``(format, arrays)``: a zoo file's named arrays as stored (Keras: ``(layer, {tensor:
    array})`` groups), read without running anything from the file."""
    if not os.path.isfile(path):
        raise ZooFileError(f"{path}: no such file")
    fmt = fmt or detect(path)
    if fmt is None:
        raise ZooFileError(f"{path}: not a zoo weight file this project reads ("
                           + "; ".join(f"{what} ({'/'.join(s)})" for what, s in FORMATS.values()) + ")")
    if fmt == "keras-h5":
        return fmt, _keras_groups(path)
    return fmt, READERS[fmt](path)


def zoo_layers(path: str, fmt: Optional[str] = None, aux: Sequence[str] = ()) -> Tuple[str, List[ZooLayer]]:
    """``(format, layers)``: a zoo file's conv / dense layers with their batch norms, in the
    zoo's creation order (aux heads named in ``aux`` last), canonical layouts."""
    fmt, arrays = read_arrays(path, fmt)
    if fmt == "keras-h5":
        order = keras_creation_order([n for n, _ in arrays],
                                     ["bn" if "moving_mean" in t else "conv" for _, t in arrays])
        roles = ROLES[fmt]
        items = []
        for i in order:
            name, t = arrays[i]
            unknown = [k for k in t if k not in roles]
            if unknown:
                raise ZooMismatch(f"Keras layer {name!r} has {unknown[0]!r}, a tensor the table has no place for")
            kind, tensors = _state_layer(fmt, name, {roles[k]: v for k, v in t.items()})
            items.append((kind, name, tensors))
        return fmt, attach_bn(items)
    return fmt, state_dict_layers(fmt, arrays, aux)
