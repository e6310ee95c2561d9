"""The second look: the network run again on the flipped input, as N more exits einet treats like any other."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from einet.models import build  # noqa: E402
from einet.models.second_look import with_second_look  # noqa: E402
from einet.policies import FixedPlan, single_exit  # noqa: E402
from einet.rules import AnswerRule  # noqa: E402
from einet.runtime import ElasticRuntime  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("name", ["b_alexnet", "msdnet21"])
def test_second_pass_is_the_network_on_the_flipped_input(name):
    torch.manual_seed(0)
    model = build(name, num_classes=10, in_channels=3, width=0.125).eval()
    looked = with_second_look(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain, flipped, both = model(x), model(x.flip(3)), looked(x)
    n = model.num_exits
    assert looked.num_exits == 2 * n
    for i in range(n):
        torch.testing.assert_close(both[i], plain[i])
        torch.testing.assert_close(both[n + i], flipped[i])
    assert {id(p) for p in looked.parameters()} == {id(p) for p in model.parameters()}  # shared, none added


def test_a_shallower_second_look_is_the_full_ones_first_exits_of_each_pass():
    torch.manual_seed(0)
    model = build("msdnet21", num_classes=10, in_channels=3, width=0.125).eval()
    n, depth = model.num_exits, 3
    full, shallow = with_second_look(model).eval(), with_second_look(model, depth=depth).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        every, cut = full(x), shallow(x)
    assert shallow.num_exits == len(cut) == 2 * depth
    for i in range(depth):
        torch.testing.assert_close(cut[i], every[i])
        torch.testing.assert_close(cut[depth + i], every[n + i])
    assert shallow.label == f"second look (flip, depth {depth} of {n})" and full.label == "second look (flip)"
    assert set(shallow.state_dict()) < set(model.state_dict())  # a prefix of the base's weights, none added


def test_the_runtime_runs_both_passes_and_ensembles_them():
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.125).eval()
    looked = with_second_look(model).eval()
    x = torch.randn(1, 3, 32, 32)
    n = model.num_exits
    with torch.no_grad():
        final, final_flipped = model(x)[-1], model(x.flip(3))[-1]
    weights = (0.0,) * (n - 1) + (1.0,) + (0.0,) * (n - 1) + (1.0,)
    both_finals = np.zeros(2 * n, dtype=bool)
    both_finals[[n - 1, 2 * n - 1]] = True
    runtime = ElasticRuntime(looked, FixedPlan(both_finals, "both finals"), rule=AnswerRule("ensemble", weights))
    try:
        answer = runtime.infer(x)
        assert answer.exits_run == (n - 1, 2 * n - 1)
        expected = (final.log_softmax(1) + final_flipped.log_softmax(1)).argmax(1).item()
        assert answer.prediction == expected
        runtime.policy = single_exit(2 * n)
        assert runtime.infer(x).prediction == int(np.argmax(final_flipped.numpy()))
    finally:
        runtime.close()


def test_the_runtime_runs_a_shallower_second_look():
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.125).eval()
    depth = 2
    looked = with_second_look(model, depth=depth).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        exit_2, exit_2_flipped = model(x)[depth - 1], model(x.flip(3))[depth - 1]
    both = np.zeros(2 * depth, dtype=bool)
    both[[depth - 1, 2 * depth - 1]] = True
    runtime = ElasticRuntime(looked, FixedPlan(both, "both exit 2s"), rule=AnswerRule("ensemble", (0.0, 1.0, 0.0, 1.0)))
    try:
        answer = runtime.infer(x)
        assert answer.exits_run == (depth - 1, 2 * depth - 1)
        assert answer.prediction == (exit_2.log_softmax(1) + exit_2_flipped.log_softmax(1)).argmax(1).item()
    finally:
        runtime.close()


def test_bad_views_and_models_are_refused():
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.125)
    with pytest.raises(ValueError, match="unknown view 'rotate'"):
        with_second_look(model, view="rotate")
    with pytest.raises(TypeError, match="a second look needs a MultiExitNetwork, got Linear"):
        with_second_look(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    assert with_second_look(model, depth=np.int64(2)).num_exits == 4
    for depth in (0, 4, 2.0, True):
        with pytest.raises(ValueError, match=f"depth must be a whole number of blocks in 1..3, got {depth!r}"):
            with_second_look(model, depth=depth)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SecondLook overrides forward_block, forward_exit, num_exits"):
        with_second_look(with_second_look(model))  # a network that runs its blocks its own way
