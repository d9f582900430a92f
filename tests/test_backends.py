"""Every backend builds the table's network: shapes and parameter counts equal the oracle."""
import numpy as np
import pytest

from backends import API, EXPORT_API
from common.net import oracle, spec as S
from common.net.spec import Conv, Dense, Inception, MaxPool, GlobalAvgPool, Flatten, Spec, stage

BOOK_STAGES = {"b1": (64, 24, 24), "b2": (192, 12, 12), "b3": (480, 6, 6), "b4": (832, 3, 3),
               "b5": (1024,), "head": (10,)}


def halved():
    """A user-written table: the book's net with every width halved."""
    return S.scale_channels(S.googlenet("d2l"), 0.5, name="halved")


def rgb100():
    """A user-written table: 3 input channels, 100 classes, 64x64 default input."""
    return S.googlenet("d2l", in_channels=3, num_classes=100, input_size=64)


def tiny():
    """A user-written table from scratch: two stages, one Inception block."""
    return Spec("tiny", 2, 32, (
        stage("s1", Conv(8, 3, 1, 1), MaxPool(3, 2, 1)),
        stage("s2", Inception(4, (4, 8), (2, 4), 4), GlobalAvgPool(), Flatten(), Dense(5)),
    ))


USER_TABLES = [halved, rgb100, tiny]


def test_public_api_is_identical(bk):
    missing = [n for n in API if not hasattr(bk, n)]
    assert not missing, f"{bk.NAME} lacks {missing}"
    missing = [n for n in EXPORT_API if not hasattr(bk.export, n)]
    assert not missing, f"{bk.NAME}.export lacks {missing}"


def test_book_net_stages_and_params(bk):
    net = bk.build()
    X = np.random.default_rng(0).random((2, 1, 96, 96), dtype=np.float32)
    outs = bk.stage_outputs(net, X)
    assert {k: v.shape[1:] for k, v in outs.items()} == BOOK_STAGES
    assert bk.count_params(net) == 5_977_530 == oracle.analyze("d2l").params


@pytest.mark.parametrize("make", USER_TABLES, ids=lambda f: f.__name__)
def test_user_tables_match_oracle(bk, make):
    spec = make()
    a = oracle.analyze(spec)
    net = bk.build(spec)
    X = np.random.default_rng(1).random((2, spec.in_channels, spec.input_size, spec.input_size),
                                        dtype=np.float32)
    outs = bk.stage_outputs(net, X)
    assert list(outs) == list(a.stages)
    for name, row in a.stages.items():
        assert outs[name].shape == (2,) + row.out_shape, name
    assert bk.count_params(net) == a.params
    assert bk.forward(net, X).shape == (2, spec.num_classes)


def test_layer_table_matches_oracle(bk):
    spec = halved()
    a = oracle.analyze(spec)
    rows = {r["name"]: r for r in bk.layer_table(bk.build(spec))}
    for block in a.blocks:
        assert rows[block.name]["out_shape"] == block.out_shape, block.name
        assert rows[block.name]["params"] == block.params, block.name
    for name, st in a.stages.items():
        assert rows[name]["params"] == st.params
        assert rows[name]["macs"] == st.macs


def test_weights_roundtrip_and_canonical_names(bk):
    net = bk.build(halved(), seed=3)
    w = bk.get_weights(net)
    expected = oracle.param_shapes(net.spec, net.input_size)
    assert list(w) == list(expected)
    assert {k: v.shape for k, v in w.items()} == dict(expected)
    from common.net.weights import xavier_init
    ref = xavier_init(net.spec, 3, net.input_size)
    for k in ref:
        np.testing.assert_array_equal(w[k], ref[k], err_msg=k)


def test_device_is_reported(bk):
    d = bk.device()
    assert isinstance(d, str) and d
    import shutil
    if shutil.which("nvidia-smi") is None:
        assert "cpu" in d.lower()


def test_four_public_apis_are_the_same():
    """Every installed backend exposes the same public names with the same signatures."""
    import inspect
    from backends.config import installed
    from tests.conftest import backend_or_skip
    mods = [backend_or_skip(n) for n in installed()]
    if len(mods) < 2:
        pytest.skip("needs two installed backends")

    def public(m):
        return {n for n in dir(m) if not n.startswith("_") and n not in ("core", "model", "training")}

    def sig(f):
        return str(inspect.signature(f))
    first = mods[0]
    for m in mods[1:]:
        assert public(m) == public(first), (m.NAME, public(m) ^ public(first))
        for name in ("build", "forward", "stage_outputs", "set_weights", "init_weights",
                     "layer_table", "save_native", "load_native", "read_native"):
            assert sig(getattr(m, name)) == sig(getattr(first, name)), (m.NAME, name)
        assert sig(m.Trainer.__init__) == sig(first.Trainer.__init__), m.NAME
        assert public(m.export) >= set(EXPORT_API), (m.NAME, set(EXPORT_API) - public(m.export))
        for name in ("export", "export_onnx", "predictor"):
            assert sig(getattr(m.export, name)) == sig(getattr(first.export, name)), (m.NAME, "export." + name)
        for meth in ("train_step", "eval_step", "save_optimizer", "load_optimizer"):
            assert sig(getattr(m.Trainer, meth)) == sig(getattr(first.Trainer, meth)), (m.NAME, meth)
