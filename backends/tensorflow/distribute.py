"""TensorFlow: data-parallel training on ``tf.distribute``.

Several worker processes (``TF_CONFIG`` names them, as ``scripts/train.py --nproc-per-node``
and any cluster manager set it): ``MultiWorkerMirroredStrategy``, RING collectives over
gRPC on the CPU, NCCL on GPUs.  One process with several GPUs: ``MirroredStrategy`` over
them (one worker in the loop's terms; the Trainer splits its rows between the GPUs).

How it is used (``cli/train.py``, ``common/train/loop.py``):

* :func:`init` comes first, before any TensorFlow op of the process (the collectives are
  configured once, at start-up: "Collective ops must be configured at program startup");
* the network and the Trainer are created inside ``world.scope()`` (the strategy's), so the
  weights and the optimiser's slots are the strategy's variables (mirrored: one copy per
  replica, worker 0's initial values broadcast when they are created);
* the Trainer runs its step inside ``strategy.run`` (``training.Trainer``): each worker's
  loss is its rows' summed loss divided by the **global** batch
  (``tf.nn.compute_average_loss``), the gradients are **summed** over the replicas, then
  clipped and decayed: the single process's update on the global batch.

Batch norm: each replica normalises with its own rows' statistics and keeps its own
moving statistics (``ON_READ`` variables).  TensorFlow would read those as their mean over
the workers (a collective); this backend reads the local copy instead (:func:`local`,
:func:`call`), so evaluation, ``forward`` and ``get_weights`` involve no other worker and
rank 0 alone can write a checkpoint (with its own statistics, as PyTorch DDP's rank 0).

Faults (TensorFlow 2.15 runs a coordination service, led by worker 0): a killed worker
makes the others' collectives fail with ``UnavailableError`` at once; a hung one (alive,
silent) is declared lost by the service's heartbeat after about 10 s (``UnavailableError``,
or ``DeadlineExceededError`` when it is worker 0); a failed collective cannot be retried, so
the survivors end and the run resumes from its checkpoint.

Not verified here (no GPU): NCCL, GPUs per worker, ``MirroredStrategy`` over several GPUs
(the code paths with more than one replica in a process: :func:`split`, the first-replica
mask of ``all_sum``), one GPU per worker on a host.
"""
import json
import os
import weakref

import numpy as np
import tensorflow as tf

from common.train.distributed import SINGLE, World, shard_rows

#: the same public names in every backend (backends.DISTRIBUTE_API)
__all__ = ["launched", "init", "wrap"]


SUM = tf.distribute.ReduceOp.SUM


def _cluster() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except ValueError:
        return {}


def launched() -> bool:
    """Whether this process is one of several workers (``TF_CONFIG`` with more than one)."""
    cluster = _cluster()
    return len(cluster.get("chief", [])) + len(cluster.get("worker", [])) > 1


def _place() -> tuple:
    """(this worker's place among the workers of ``TF_CONFIG`` on its host, how many there are)."""
    config = json.loads(os.environ["TF_CONFIG"])
    tasks = _cluster().get("chief", []) + _cluster().get("worker", [])
    hosts = [t.rsplit(":", 1)[0] for t in tasks]
    i = tasks.index(config["cluster"][config["task"]["type"]][config["task"]["index"]])
    return hosts[:i].count(hosts[i]), hosts.count(hosts[i])


def init(timeout: float = 600.0) -> World:
    """The strategy for this process: ``MultiWorkerMirroredStrategy`` when launched as a
    worker, ``MirroredStrategy`` with several GPUs, else a single process.  Must come before
    any TensorFlow op.

    Workers on one host with GPUs take one GPU each (the ``local_rank``-th); a worker alone on
    its host uses all of them.  ``timeout`` is not passed to the collectives: TensorFlow's
    per-collective deadline (``CommunicationOptions(timeout_seconds=)``) starts a thread per
    collective that lives that long (500 threads after 200 steps with 120 s, and slower
    steps); a lost or hung worker is detected by the coordination service's heartbeat instead.
    """
    gpus = tf.config.list_physical_devices("GPU")           # no op: the runtime is not started
    if launched():
        local_rank, on_host = _place()
        if gpus and on_host > 1:
            gpus = [gpus[local_rank % len(gpus)]]
            tf.config.set_visible_devices(gpus, "GPU")
        impl = tf.distribute.experimental.CommunicationImplementation.NCCL if gpus else \
            tf.distribute.experimental.CommunicationImplementation.RING
        options = tf.distribute.experimental.CommunicationOptions(implementation=impl)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        resolver = strategy.cluster_resolver
        chief = len(_cluster().get("chief", []))
        rank = resolver.task_id + (chief if resolver.task_type == "worker" else 0)
        engine = f"MultiWorkerMirroredStrategy/{impl.name}"
    elif len(gpus) > 1:
        strategy, rank, local_rank = tf.distribute.MirroredStrategy(), 0, 0
        engine = f"MirroredStrategy ({len(gpus)} GPUs)"
    else:
        return SINGLE
    local = len(strategy.extended.worker_devices)             # replicas in this process
    size = strategy.num_replicas_in_sync // local             # worker processes

    @tf.function
    def total(x):
        def replica(v):               # one copy per process: the first local replica's
            ctx = tf.distribute.get_replica_context()
            first = tf.cast(tf.equal(ctx.replica_id_in_sync_group % local, 0), v.dtype)
            return ctx.all_reduce(SUM, v * first)
        return strategy.experimental_local_results(strategy.run(replica, args=(x,)))[0]

    def all_sum(values):
        return total(tf.constant(np.asarray(values, np.float64))).numpy()

    def barrier():
        all_sum(np.zeros(1))

    def shutdown():
        """Wait for the others (a worker that leaves early would be reported as lost by the
        coordination service); after a failure, when they cannot answer, just leave."""
        try:
            barrier()
        except tf.errors.OpError:
            pass

    return World(rank=rank, size=size, engine=engine, local_rank=local_rank, all_sum=all_sum, barrier=barrier,
                 shutdown=shutdown if size > 1 else None, scope=strategy.scope)


def strategy_of(net):
    """The strategy whose scope created ``net``'s variables, or None."""
    v = net.weights[0] if net.weights else None
    return v.distribute_strategy if isinstance(v, tf.distribute.DistributedValues) else None


def local(v):
    """This process's copy of a variable (its first local replica's): a plain read, never a
    collective (a distributed ``ON_READ`` variable, batch norm's moving statistics, would be
    averaged over the workers)."""
    if isinstance(v, tf.distribute.DistributedValues):
        return v.distribute_strategy.experimental_local_results(v)[0]
    return v


def split(strategy, *tensors):
    """``tensors`` (this worker's rows) as the strategy's per-replica inputs: as they are with
    one replica per process, else each local replica's contiguous rows."""
    local_n = len(strategy.extended.worker_devices)
    if local_n == 1:
        return tensors

    def rows(t):
        def part(ctx):
            i = ctx.replica_id_in_sync_group % local_n
            return t[shard_rows(int(t.shape[0]), i, local_n)]
        return strategy.experimental_distribute_values_from_function(part)
    return tuple(rows(t) for t in tensors)


def local_results(strategy, value):
    """A per-replica result as the list of this process's replicas' values."""
    return list(strategy.experimental_local_results(value))


_CALLS = weakref.WeakKeyDictionary()      # net -> its graph inside strategy.run


def call(net, X, training=False):
    """``net(X)`` reading this process's variables: inside ``strategy.run`` (a graph) when
    ``net`` was built under a strategy, its rows split between the local replicas."""
    strategy = strategy_of(net)
    if strategy is None:
        return net(X, training=training)
    if net not in _CALLS:
        ref = weakref.ref(net)

        def run(X, training):
            outs = local_results(strategy, strategy.run(lambda x: ref()(x, training=training), args=(X,)))
            if len(outs) == 1:
                return outs[0]
            if isinstance(outs[0], tuple):
                return type(outs[0])(*(tf.concat(list(parts), 0) for parts in zip(*outs)))
            return tf.concat(outs, 0)
        _CALLS[net] = tf.function(run, reduce_retracing=True)
    return _CALLS[net](*split(strategy, X), bool(training))


def wrap(net, world):
    """The network as the Trainer runs it in a data-parallel run: unchanged here (the
    engine combines the gradients in the Trainer's step)."""
    return net
