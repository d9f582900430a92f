"""The benchmark's workers: each runs in its own process (``scripts/bench.py --worker BACKEND
--config CONFIG``) and prints one JSON line, so that frameworks never share a process and the
peak memory is that configuration's own."""
from __future__ import annotations

import importlib
import itertools
import json
import sys
import tempfile
import time
import traceback

from common.results import bench as B
from common.train.trainer import AmpError
from backends.config import CARDS, FRAMEWORK_MODULE, canonical

#: ours: config name -> the Trainer's ``fast`` argument.  ``shipped`` is ``fast`` with the
#: framework as it ships: the driver starts it with GOOGLENET_FRAMEWORK_DEFAULTS=0, so the
#: backend sets none of common.runtime's variables (Paddle's MKL_DEBUG_CPU_TYPE).
OURS = {"eager": False, "fast": True, "shipped": True, "bf16": True}
#: ours in mixed precision: config name -> the Trainer's ``amp`` (``fast=True`` as shipped)
AMP = {"bf16": "bf16"}
#: documented opt-in fast paths that are not the default (they change float32 summation
#: order beyond the equivalence tests' tolerance), measured as extra configurations
OPT_IN = {}
MARK = "BENCH-RESULT "


def _emit(obj):
    sys.stdout.flush()
    print(MARK + json.dumps(obj), flush=True)


def worker_roofline(args):
    """Matrix-multiply rate of NumPy's BLAS (no framework in this process)."""
    return {"numpy": B.numpy_matmul_peak(args.matmul_size)}


def worker_matmul(backend, args):
    """The same float32 matrix multiply with the backend's framework, in its own process."""
    import numpy as np
    from backends import get_backend
    bk = get_backend(backend)
    library, mm, to_array = CARDS[backend].matmul()     # the card's: (name, matmul, array maker or None)
    n = args.matmul_size
    rng = np.random.default_rng(0)
    to = to_array or bk.to_tensor
    a, b = (to(rng.random((n, n), dtype=np.float32)) for _ in range(2))
    runs = B.matmul_gflops(mm, a, b, n)
    return dict(library=library, n=n, gflops=B.median(runs), runs=runs)


def book_module(backend):
    """``backends/<backend>/book.py``, the book's code.  Its package ``backends.<backend>``
    holds only the card, so no backend sets up its framework in this process
    (``tests/test_bench.py`` checks it)."""
    return importlib.import_module(f"backends.{backend}.book")


def _book(backend, with_env):
    """The book's code as a reader runs it: this process imports the framework and the book's
    module only, never this project's backends (whose import would change the framework's
    settings).  ``with_env``: with the settings our backend applies (``common.runtime``'s
    environment before the import; Paddle's thread count after it)."""
    from common import runtime
    if with_env:
        runtime.set_default_env(runtime.card_env(CARDS[backend]))
    ref = book_module(backend)
    module = importlib.import_module(FRAMEWORK_MODULE[backend])
    if with_env and CARDS[backend].bench.book_after_import:   # e.g. Paddle's thread count
        CARDS[backend].bench.book_after_import(module)
    return ref, module.__version__


def worker_config(backend, config, args):
    """Time one configuration of one backend; see the module docstring."""
    data = B.batches(args.batch_size, args.input_size)
    t0 = time.perf_counter()
    if config in ("book", "book-env"):
        ref, version = _book(backend, config == "book-env")
        net = ref.book_net()
        step = ref.make_book_step(net, lr=0.1)
        train = lambda X, y: step(X, y)                             # noqa: E731
        infer = lambda X, y: ref.book_logits(net, X)                # noqa: E731
        device, settings = "the book's try_gpu()", None
    elif config in OURS or config in OPT_IN.get(backend, {}):
        from backends import get_backend
        bk = get_backend(backend)
        version, device = bk.framework_version(), bk.device()
        net = bk.build(input_size=args.input_size)
        try:
            trainer = bk.Trainer(net, lr=0.1, fast=OURS.get(config, OPT_IN.get(backend, {}).get(config)),
                                 amp=AMP.get(config))
        except AmpError as e:                        # the framework cannot do it here: said, not failed
            return dict(backend=backend, config=config, framework_version=version, device=device,
                        status="refused", reason=str(e))
        settings = bk.settings()
        train = lambda X, y: trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))  # noqa: E731
        infer = lambda X, y: trainer.eval_step(bk.to_tensor(X), bk.to_tensor(y))   # noqa: E731
    else:
        raise ValueError(f"unknown config {config!r}")
    build_s = time.perf_counter() - t0

    def timed(fn):
        return _timed(fn, data, args, args.batch_size)

    first_train, train_runs = timed(train)
    first_infer, infer_runs = timed(infer)        # after training: book_logits switches to eval mode
    return dict(backend=backend, config=config, framework_version=version,
                device=device, settings=settings, build_s=build_s, first_step_s=first_train,
                first_infer_s=first_infer, train_ex_s=B.median(train_runs), train_runs=train_runs,
                infer_ex_s=B.median(infer_runs), infer_runs=infer_runs, peak_rss_mb=B.peak_rss_mb())


def zoo_entry(backend, name):
    """The card's (zoo name, preset, least size, the zoo's own size) of ``name``."""
    found = [z for z in CARDS[backend].bench.zoo if z[0] == name]
    if not found:
        raise ValueError(f"{backend} has no zoo model {name!r} in the benchmark")
    return found[0]


def worker_zoo(backend, config, args):
    """``zoo:NAME``: the framework's own zoo model trained and run as its documentation
    shows (``backends/<backend>/zoo.py``'s ``bench_peer``; this process imports no backend,
    so the framework runs with its shipped settings); ``ours:NAME``: the preset that
    reproduces it, ours, fast path.  Both at ``args.zoo_size``, batch ``args.zoo_batch``,
    float32, 3-channel images, 1000 classes (the zoo's)."""
    kind, name = config.split(":", 1)
    zname, preset, _, _ = zoo_entry(backend, name)
    size, n = args.zoo_size, args.zoo_batch
    data = B.batches(n, size, in_channels=3)
    t0 = time.perf_counter()
    if kind == "zoo":
        zoo = importlib.import_module(f"backends.{backend}.zoo")
        train, infer, what = zoo.bench_peer(zname, size)
        run_train, run_infer = train, (lambda X, y: infer(X))
        version = importlib.import_module(FRAMEWORK_MODULE[backend]).__version__
        settings = None
    else:
        from backends import get_backend
        bk = get_backend(backend)
        net = bk.build(preset, input_size=size)
        trainer = bk.Trainer(net, lr=0.1, fast=True)
        run_train = lambda X, y: trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))  # noqa: E731
        run_infer = lambda X, y: trainer.eval_step(bk.to_tensor(X), bk.to_tensor(y))   # noqa: E731
        what, version, settings = f"ours: {preset}, fast path", bk.framework_version(), bk.settings()
    build_s = time.perf_counter() - t0
    first_train, train_runs = _timed(run_train, data, args, n)
    first_infer, infer_runs = _timed(run_infer, data, args, n)
    return dict(backend=backend, config=config, zoo=zname, preset=preset, what=what, input_size=size,
                batch_size=n, framework_version=version, settings=settings, build_s=build_s,
                first_step_s=first_train, first_infer_s=first_infer, train_ex_s=B.median(train_runs),
                train_runs=train_runs, infer_ex_s=B.median(infer_runs), infer_runs=infer_runs,
                peak_rss_mb=B.peak_rss_mb())


def _timed(fn, data, args, batch_size):
    """(first call's seconds, examples/s of ``args.repeats`` x ``args.steps`` calls after
    ``args.warmup`` warm-up calls), cycling the batches."""
    cycle = itertools.cycle(data)
    call = lambda: fn(*next(cycle))                                  # noqa: E731
    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    for _ in range(args.warmup - 1):
        call()
    return first, B.time_repeats(call, args.steps, args.repeats, batch_size)


def worker_isa(backend, args):
    """One forward of ours (fast path) at 32x32, for the driver, which starts this process
    with ONEDNN_VERBOSE=1 / DNNL_VERBOSE=1 and reads oneDNN's first lines (its version and
    the instruction set it dispatched) from the output."""
    import numpy as np
    from backends import get_backend
    bk = get_backend(backend)
    net = bk.build(input_size=32)
    bk.Trainer(net, lr=0.1)
    bk.forward(net, np.zeros((1, net.spec.in_channels, 32, 32), np.float32))
    return dict(backend=backend)


def worker_stages(backend, args):
    """Where the forward time goes: each stage of ours (fast path, evaluation mode) timed on
    its own input, with its multiply-adds from the oracle, so a stage far below the machine's
    matrix-multiply rate shows (small 1x1 convolutions, the 7x7 convolution of one channel)."""
    import numpy as np
    from backends import get_backend
    from common.net import oracle
    bk = get_backend(backend)
    net = bk.build(input_size=args.input_size)
    bk.Trainer(net, lr=0.1)                           # the fast path's layout (PyTorch: channels-last)
    api = bk.model.api
    X = bk.to_tensor(B.batches(args.batch_size, args.input_size, count=1)[0][0])
    stages = oracle.analyze("d2l", args.input_size).stages
    out = {}
    with api._evaluating(net):
        for st in net.spec.stages:
            blocks = [f"{st.name}.{n}" for n, _ in st.layers]

            def run(X=X, blocks=blocks):
                for q in blocks:
                    X = net.call_block(q, X)
                return X
            nxt = run()
            np.asarray(bk.to_numpy(nxt))                # synchronise (asynchronous engines)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for _ in range(args.steps):
                    np.asarray(bk.to_numpy(run()))
                times.append((time.perf_counter() - t) / args.steps)
            sec = B.median(times)
            macs = stages[st.name].macs * args.batch_size
            out[st.name] = dict(ms=1000 * sec, gflops=2 * macs / sec / 1e9 if sec else None, macs=macs)
            X = nxt
    return dict(backend=backend, stages=out)


def worker_pipeline(backend, args):
    """``common.train.loop.fit`` with ``common.inputs.data.Loader`` on generated uint8 data: the last
    epoch's compute-only vs end-to-end examples/s (definitions in ``common/train/loop.py``)."""
    import numpy as np
    from backends import get_backend
    from common.inputs.data import Loader, Split
    from common.train.loop import fit
    from common.train.train_config import Recipe
    bk = get_backend(backend)
    rng = np.random.default_rng(0)
    n = args.pipeline_batches * args.batch_size
    s = args.input_size
    train = Split(rng.integers(0, 256, (n, s, s), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
    test = Split(train.images[:args.batch_size], train.labels[:args.batch_size])
    recipe = Recipe(num_epochs=2, batch_size=args.batch_size, resize=s)
    net = bk.build(input_size=s)
    with tempfile.TemporaryDirectory() as run_dir:
        rec = fit(bk, net, Loader(train, args.batch_size, shuffle=True), Loader(test, args.batch_size),
                  recipe, run_dir, progress=False, log=lambda *a, **k: None, fast=True)
    h = rec["history"][-1]                        # the second epoch: warm-up excluded
    compute, e2e = h["examples"] / h["compute_time"], h["examples"] / h["train_time"]
    return dict(backend=backend, examples=h["examples"], compute_ex_s=compute, end_to_end_ex_s=e2e,
                end_to_end_over_compute=e2e / compute, within_10pct=e2e >= 0.9 * compute)


def worker_main(args):
    try:
        if args.worker == "roofline":
            res = worker_roofline(args)
        elif args.config == "matmul":
            res = worker_matmul(canonical(args.worker), args)
        elif args.config == "pipeline":
            res = worker_pipeline(canonical(args.worker), args)
        elif args.config == "stages":
            res = worker_stages(canonical(args.worker), args)
        elif args.config == "isa":
            res = worker_isa(canonical(args.worker), args)
        elif args.config.startswith(("zoo:", "ours:")):
            res = worker_zoo(canonical(args.worker), args.config, args)
        else:
            res = worker_config(canonical(args.worker), args.config, args)
    except Exception as e:                                          # reported, not raised
        res = dict(status="failed", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc()[-3000:])
    res.setdefault("status", "ok")
    _emit(res)
