"""One node's launcher of tests/test_multinode.py: ``backends/launch.py`` with several nodes,
running any worker command (``tests/dist_worker.py``), as ``scripts/train.py --nnodes`` runs
its own.

    python tests/dist_node.py BACKEND NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT NODE_ADDR WORKDIR ARGV...

Exits 0 when this node's workers all finished, else prints one ``error:`` line and exits 1."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backends import launch  # noqa: E402


def main(backend, nproc, nnodes, node_rank, master_addr, master_port, node_addr, workdir, *argv):
    nodes = launch.Nodes(int(nnodes), int(node_rank), master_addr, int(master_port), node_addr, timeout=120)
    os.makedirs(workdir, exist_ok=True)
    try:
        launch.run(launch.plan(backend, list(argv), int(nproc), workdir, nodes=nodes), timeout=300, cwd=ROOT)
    except launch.LaunchError as e:
        print(f"error: node {node_rank}: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
