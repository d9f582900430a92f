"""A backend's card: what the rest of the project needs to know about one framework, without
importing it.

Each backend folder holds one (``backends/<framework>/card.py``, ``CARD``); the registry
(:mod:`backends`) collects them.  Adding a backend is one folder with the same module names
as the others (``card``, ``core``, ``model``, ``training``, ``distribute``, ``export``,
``book``) plus one line in the registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from common.serve.export import Format

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Cluster:
    """Where the processes of a run are, as every node's launcher agreed (``backends/launch.py``):
    ``hosts[n]`` is node ``n``'s address (node 0 the master), ``ports[n]`` the ports node ``n``'s
    launcher found free there (``Card.launch_ports(nproc)`` of them), ``nproc`` the workers per
    node, ``node`` this node, ``iface`` the network interface of this node's address (gloo and
    ps-lite pick their address from it).  One node on 127.0.0.1 is the local run."""
    nproc: int
    hosts: Tuple[str, ...]
    ports: Tuple[Tuple[int, ...], ...]
    workdir: str
    node: int = 0
    iface: str = "lo"

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def world(self) -> int:
        """The number of workers on every node together."""
        return self.nproc * self.nnodes

    @property
    def addr(self) -> str:
        """This node's address."""
        return self.hosts[self.node]

    def rank(self, local: int) -> int:
        """The global rank of this node's ``local``-th worker (node-major, as torchrun's)."""
        return self.node * self.nproc + local

    def endpoints(self, first: int = 0) -> List[str]:
        """``host:port`` of every worker of the run, in rank order: worker ``l`` of node ``n``
        at ``ports[n][first + l]``."""
        return [f"{h}:{p[first + l]}" for h, p in zip(self.hosts, self.ports) for l in range(self.nproc)]


@dataclass(frozen=True)
class Launch:
    """The environment of this node's processes of a run: each worker's variables
    (``workers[l]``, local order) and helper processes the engine needs beside them
    (``helpers``: ``(role, variables)``, e.g. MXNet's scheduler and server)."""
    workers: List[Dict[str, str]]
    helpers: List[Tuple[str, Dict[str, str]]] = field(default_factory=list)


@dataclass(frozen=True)
class Bench:
    """The benchmark's figures for this backend (``scripts/bench.py``, docs/performance.md)."""
    book_quote: Optional[float] = None        # the book's training examples/s the issue quoted
    settings_gain: Optional[float] = None     # target: our fast path / the framework's shipped settings
    memory_vs: Optional[Tuple[str, float]] = None   # target: peak memory at most x times that backend's
    book_env: bool = False                    # time the book's code with our settings too
    book_after_import: Optional[Callable] = None   # ... and this, given the framework's module, after its import
    #: the framework's own zoo models of the family that the benchmark trains beside ours
    #: (``backends/<framework>/zoo.py``'s ``bench_peer``): (zoo name, our preset that
    #: reproduces it, the least input size both train at, the zoo's own input size)
    zoo: Tuple[Tuple[str, str, int, int], ...] = ()


@dataclass(frozen=True)
class Card:
    name: str                                 # the canonical backend name
    aliases: Tuple[str, ...]                  # other names --backend / GOOGLENET_BACKEND accept
    module: str                               # the framework's import name
    pip: str                                  # how to install it
    native_suffix: str                        # its own weight file's suffix
    formats: Tuple[Format, ...]               # the serving formats it writes (every backend writes ONNX)
    onnx_opset: int                           # the ONNX opset its exporter writes
    d2l_module: Optional[str]                 # the book's d2l module for it (None: the pinned d2l has none)
    launch: Callable[[Cluster], Launch]       # this node's processes of a run
    #: how many free ports each node of a run of nproc workers per node needs (its launcher picks them)
    launch_ports: Callable[[int], int]
    #: () -> (library, matmul(a, b), to_array or None): the benchmark's; imports the framework when called
    matmul: Callable[[], tuple]
    d2l_missing: str = ""                     # why there is no d2l module, where d2l_module is None
    d2l_needs_torchvision: bool = False       # its d2l module imports torchvision (backends.d2l_compat)
    env: Callable[[str], Dict[str, str]] = lambda vendor: {}   # variables to set before its import, by CPU vendor
    bench: Bench = Bench()
    #: () -> whether the framework's own launcher may restart this worker after a failure (an
    #: elastic run: torchrun --max-restarts N > 0); such a worker resumes its run folder's last
    #: checkpoint when it starts (cli/nodes.py)
    elastic: Callable[[], bool] = lambda: False
    #: its own int8 serving formats (``Format.int8_of`` names the float32 one each quantizes;
    #: written with ``--int8``, calibrated on training images); ONNX's int8 is every backend's
    int8_formats: Tuple[Format, ...] = ()

    @property
    def format_names(self) -> Tuple[str, ...]:
        """The names of the float32 serving formats it writes (ONNX aside)."""
        return tuple(f.name for f in self.formats)

    @property
    def int8_names(self) -> Tuple[str, ...]:
        """The names of its own int8 serving formats (ONNX's aside)."""
        return tuple(f.name for f in self.int8_formats)
