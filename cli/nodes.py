"""``scripts/train.py`` on several machines (torchrun's option names) and after an elastic
restart: the options, and what they change in a run (docs/distributed.md).

    # on node 0 (the master, 10.0.0.1) and on node 1 (10.0.0.2): the same command but the rank
    python scripts/train.py --backend B --nproc-per-node 2 --nnodes 2 --node-rank 0 \\
        --master-addr 10.0.0.1 --run-dir /shared/runs/r ...
    python scripts/train.py --backend B --nproc-per-node 2 --nnodes 2 --node-rank 1 \\
        --master-addr 10.0.0.1 --node-addr 10.0.0.2 --run-dir /shared/runs/r ...

Each node's launcher (``backends/launch.py``) starts its own workers once every node has
joined node 0's; the run folder is one path that every node reads (rank 0 writes it).
"""
from __future__ import annotations

from typing import List, Optional

from backends import launch
from backends.card import LOOPBACK
from backends.config import CARDS, resolve
from common.train import checkpoint

from .errors import UserError

#: every spelling of the options, stripped from the workers' command line (the launcher's own)
SPELLINGS = ("--nproc-per-node", "--nproc_per_node", "--nnodes", "--node-rank", "--node_rank",
             "--master-addr", "--master_addr", "--master-port", "--master_port", "--node-addr", "--node_addr")


def add_node_args(g):
    """The several-machine options, in the "several workers" group of ``train.py``."""
    g.add_argument("--nnodes", type=int, default=1,
                   help="machines (nodes) in the run: start this command on each, with its own --node-rank "
                        "and the same other options (1)")
    g.add_argument("--node-rank", "--node_rank", dest="node_rank", type=int, default=0,
                   help="this node's rank, 0 .. nnodes-1; node 0 is the master (0)")
    g.add_argument("--master-addr", "--master_addr", dest="master_addr", default=LOOPBACK,
                   help=f"node 0's IP address, where the nodes' launchers meet ({LOOPBACK})")
    g.add_argument("--master-port", "--master_port", dest="master_port", type=int, default=launch.MASTER_PORT,
                   help=f"the port node 0's launcher listens at, free there ({launch.MASTER_PORT})")
    g.add_argument("--node-addr", "--node_addr", dest="node_addr",
                   help="this node's IP address (default: --master-addr on node 0, elsewhere the address "
                        "this machine reaches the master from)")


def nodes_of(args) -> Optional[launch.Nodes]:
    """The run's nodes (None: this machine alone), checked."""
    if args.nnodes < 1:
        raise UserError(f"--nnodes must be at least 1, not {args.nnodes}")
    if args.nnodes == 1:
        if args.node_rank != 0:
            raise UserError(f"--node-rank {args.node_rank} needs --nnodes {args.node_rank + 1} or more")
        return None
    if not 0 <= args.node_rank < args.nnodes:
        raise UserError(f"--node-rank must be from 0 to {args.nnodes - 1} with --nnodes {args.nnodes}, "
                        f"not {args.node_rank}")
    if not (args.run_dir or args.resume):
        raise UserError(f"--nnodes {args.nnodes} needs --run-dir (or --resume): every node names the same "
                        f"run folder, which every node can read (rank 0 writes it)")
    return launch.Nodes(args.nnodes, args.node_rank, args.master_addr, args.master_port, args.node_addr,
                        timeout=args.dist_timeout)


def launched_here(args) -> bool:
    """Whether this command starts workers (several here, or this node's share of several nodes)."""
    return args.nproc_per_node > 1 or args.nnodes > 1


def worker_argv(argv: List[str], without) -> List[str]:
    """A worker's command line: ``argv`` without the launcher's options (``without(argv, option)``)."""
    for option in SPELLINGS:
        argv = without(argv, option)
    return argv


def described(args) -> str:
    """``2 workers on this machine`` or ``node 1 of 2 (master 127.0.0.1:29500), 2 workers here``."""
    here = f"{args.nproc_per_node} worker{'s' if args.nproc_per_node > 1 else ''}"
    if args.nnodes == 1:
        return f"{here} on this machine"
    return f"node {args.node_rank} of {args.nnodes} (master {args.master_addr}:{args.master_port}), {here} here"


def resume_command(args, command: str, run_dir: str) -> str:
    """The command that continues the run (on this machine; several nodes: on each, with its options)."""
    again = f"{command} --resume {run_dir} --nproc-per-node {args.nproc_per_node}"
    if args.nnodes == 1:
        return again
    return (f"{again} (on one machine), or on every node {again} --nnodes {args.nnodes} --node-rank RANK "
            f"--master-addr {args.master_addr} [--node-addr ADDR]")


def restarted(args) -> bool:
    """A worker that the framework's own launcher may restart after a failure (torchrun
    ``--max-restarts``; the card's ``elastic``) continues its run with no user action, as
    torchrun's documentation asks of a training script: ``--run-dir R`` becomes ``--resume R``
    when R holds a checkpoint (written at the end of an epoch, or every ``--checkpoint-every``
    steps).  True if so."""
    if args.resume or not args.run_dir or not CARDS[resolve(args.backend)].elastic():
        return False
    if checkpoint.find(args.run_dir) is None:
        return False
    args.resume, args.run_dir = args.run_dir, None
    return True

