"""The table and the oracle reproduce the book's and the paper's numbers."""
import pytest

from common.net import oracle, spec as S
from common.net.spec import Conv, Dense, Flatten, GlobalAvgPool, Inception, MaxPool, Spec, stage


def test_book_net_numbers():
    a = oracle.analyze("d2l")
    assert a.params == 5_977_530
    assert a.macs == 276_066_304
    assert {k: v.out_shape for k, v in a.stages.items()} == {
        "b1": (64, 24, 24), "b2": (192, 12, 12), "b3": (480, 6, 6), "b4": (832, 3, 3),
        "b5": (1024,), "head": (10,)}


def test_first_inception_block():
    row, = oracle.layer_info("x", Inception(64, (96, 128), (16, 32), 32), (192, 12, 12))[-1:]
    assert row.params == 163_696 and row.out_shape == (256, 12, 12)
    # by hand: 1x1 64, 1x1 96 -> 3x3 128, 1x1 16 -> 5x5 32, pool -> 1x1 32, with biases
    by_hand = (192 * 64 + 64) + (192 * 96 + 96) + (96 * 9 * 128 + 128) + (192 * 16 + 16) \
        + (16 * 25 * 32 + 32) + (192 * 32 + 32)
    assert row.params == by_hand


def test_paper_numbers():
    paper = S.googlenet("paper")
    a = oracle.analyze(paper)
    assert (a.params, a.params_with_aux, a.macs) == (6_998_552, 13_378_280, 1_582_671_872)
    assert a.stages["b4"].out_shape == (832, 7, 7) and a.output_shape == (1000,)
    assert {k: v.out_shape for k, v in a.aux.items()} == {"aux1": (1000,), "aux2": (1000,)}


def test_torchvision_style_numbers():
    a = oracle.analyze(S.googlenet("bn", branch3_kernel=3))
    assert (a.params, a.params_with_aux, a.macs) == (6_624_904, 13_004_888, 1_498_376_192)


def test_lrn_and_dropout_add_no_parameters():
    assert oracle.analyze(S.googlenet("paper", norm="lrn")).params == 6_998_552


def test_headless_and_pooling_options():
    a = oracle.analyze(S.googlenet("d2l", include_top=False, pooling=None))
    assert a.output_shape == (1024, 3, 3)
    assert oracle.analyze(S.googlenet("d2l", include_top=False, pooling="max")).output_shape == (1024,)


@pytest.mark.parametrize("kwargs, message", [
    (dict(norm="group"), "norm"), (dict(branch3_kernel=7), "branch3_kernel"),
    (dict(aux_logits=True, include_top=False), "aux_logits"), (dict(pooling="sum"), "pooling"),
])
def test_invalid_options(kwargs, message):
    with pytest.raises(S.SpecError, match=message):
        S.googlenet("d2l", **kwargs)


def test_unknown_preset_lists_presets():
    with pytest.raises(S.SpecError, match="d2l"):
        S.get_spec("resnet")


def test_input_too_small_names_minimum():
    spec = S.googlenet("paper")
    assert oracle.min_input_size(spec) == 65
    with pytest.raises(oracle.InputTooSmall, match="65x65"):
        oracle.check_input(spec, 64)
    oracle.check_input(spec, 65)
    # the book's net pads every conv and pool, so any positive size fits
    assert oracle.min_input_size("d2l") == 1


def test_user_table_from_scratch():
    spec = Spec("tiny", 2, 16, (stage("s1", Conv(8, 3, 1, 1), MaxPool(2, 2)),
                                stage("s2", Inception(4, (4, 8), (2, 4), 4), GlobalAvgPool(), Flatten(),
                                      Dense(5))))
    a = oracle.analyze(spec)
    assert a.stages["s1"].out_shape == (8, 8, 8)
    assert a.stages["s2"].out_shape == (5,)
    # conv 2->8 3x3; inception on 8 channels; dense 20->5
    inc = (8 * 4 + 4) + (8 * 4 + 4) + (4 * 9 * 8 + 8) + (8 * 2 + 2) + (2 * 25 * 4 + 4) + (8 * 4 + 4)
    assert a.params == (2 * 9 * 8 + 8) + inc + (20 * 5 + 5)


def test_scaled_table_is_consistent():
    half = S.scale_channels(S.googlenet("d2l"), 0.5)
    a = oracle.analyze(half)
    assert a.stages["b5"].out_shape == (512,) and a.output_shape == (10,)
    assert a.params < oracle.analyze("d2l").params / 3


def test_param_shapes_cover_every_parameter():
    for spec in (S.googlenet("d2l"), S.googlenet("bn", branch3_kernel=3)):
        a = oracle.analyze(spec)
        shapes = oracle.param_shapes(spec)
        trainable = sum(int(__import__("numpy").prod(s)) for k, s in shapes.items()
                        if not k.endswith(("running_mean", "running_var")))
        assert trainable == a.params_with_aux


def test_duplicate_names_rejected():
    with pytest.raises(S.SpecError, match="duplicate"):
        stage("s", ("a", Conv(1, 1)), ("a", Conv(1, 1)))
