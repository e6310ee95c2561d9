"""experiments/levers/spliced_et.py: a variant's ET-profile is its base fixture's, re-timed only where it differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from einet.formats.checkpoint import save_checkpoint  # noqa: E402
from einet.formats.profiles import ETRecord  # noqa: E402
from einet.models import build  # noqa: E402
from einet.models.base import set_light_pools  # noqa: E402
from experiments.levers import spliced_et  # noqa: E402
from tests.helpers import fake_cifar10  # noqa: E402

SPEC = {"name": "b_alexnet", "num_classes": 10, "in_channels": 3, "width": 0.125, "exit_head": "light"}


def checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    """A light B-AlexNet and the same network with its first exit's head pooled 8x8 (as refit-exits writes)."""
    torch.manual_seed(0)
    kwargs = {k: v for k, v in SPEC.items() if k != "name"}
    base = build("b_alexnet", **kwargs)
    variant = build("b_alexnet", **kwargs)
    variant.load_state_dict(base.state_dict())
    set_light_pools(variant, [8, 4])
    save_checkpoint(tmp_path / "base.pt", base, SPEC)
    save_checkpoint(tmp_path / "variant.pt", variant, SPEC | {"exit_pools": [8, 4]})
    return tmp_path / "base.pt", tmp_path / "variant.pt"


def base_fixture(folder: Path, blocks: int) -> np.ndarray:
    folder.mkdir()
    times = np.arange(1.0, blocks + 1) * 1e-4
    ETRecord(*(times.copy() for _ in ETRecord.TIMES), meta={"model": "base"}).save(folder / "et.npz")
    return times


def run(monkeypatch, *argv: object) -> None:
    monkeypatch.setattr("sys.argv", ["spliced_et.py", *map(str, argv), "--rounds", "1", "--repeats", "3"])
    spliced_et.main()


def test_only_the_changed_head_is_re_timed(tmp_path, monkeypatch):
    base, variant = checkpoints(tmp_path)
    data = fake_cifar10(tmp_path / "data")
    times = base_fixture(tmp_path / "light", 3)
    run(monkeypatch, tmp_path / "light", "--checkpoint", base, "--variant", variant, "--data", data,
        "--holdout", "0.5", "--out", tmp_path / "light")
    et = ETRecord.load(tmp_path / "light" / "et.npz")
    np.testing.assert_array_equal(et.conv, times)  # the same blocks: the base's times, not a noisy re-measurement
    np.testing.assert_array_equal(et.branch[1:], times[1:])  # exits 2-3 unchanged
    assert et.branch[0] != times[0]  # the refitted head was timed against the old one
    assert et.meta["model"] == "base + variant variant.pt"


def test_a_second_look_on_a_base_that_has_one_re_times_only_the_head(tmp_path, monkeypatch):
    base, variant = checkpoints(tmp_path)
    data = fake_cifar10(tmp_path / "data")
    times = base_fixture(tmp_path / "looked", 4)  # B-AlexNet's first 2 blocks, twice
    run(monkeypatch, tmp_path / "looked", "--checkpoint", base, "--variant", variant, "--second-look", "flip",
        "--depth", "2", "--base-has-second-look", "--data", data, "--holdout", "0.5", "--out", tmp_path / "looked")
    et = ETRecord.load(tmp_path / "looked" / "et.npz")
    np.testing.assert_array_equal(et.conv, times)
    np.testing.assert_array_equal(et.branch[[1, 3]], times[[1, 3]])
    assert et.branch[0] != times[0] and et.branch[2] != times[2]  # the refitted head, in both passes


def test_a_second_look_added_to_a_plain_base_is_timed_everywhere(tmp_path, monkeypatch):
    base, _ = checkpoints(tmp_path)
    data = fake_cifar10(tmp_path / "data")
    times = base_fixture(tmp_path / "plain", 3)
    out = tmp_path / "looked"
    out.mkdir()
    run(monkeypatch, tmp_path / "plain", "--checkpoint", base, "--second-look", "flip", "--data", data,
        "--holdout", "0.5", "--out", out)
    et = ETRecord.load(out / "et.npz")
    assert len(et.conv) == 6 and et.meta["second_look"] == {"view": "flip", "depth": 3}
    assert not np.array_equal(et.conv, np.tile(times, 2))  # the carried input and the flip are measured


def test_a_second_look_of_half_the_blocks_is_still_a_second_look(tmp_path, monkeypatch):
    """Depth N/2 gives the variant as many blocks as the base: still two passes over blocks 1..N/2."""
    torch.manual_seed(0)
    spec = SPEC | {"name": "resnet50_fine"}
    save_checkpoint(tmp_path / "r.pt", build("resnet50_fine", **{k: v for k, v in SPEC.items() if k != "name"}), spec)
    times = base_fixture(tmp_path / "plain", 6)
    out = tmp_path / "looked"
    out.mkdir()
    run(monkeypatch, tmp_path / "plain", "--checkpoint", tmp_path / "r.pt", "--second-look", "flip", "--depth", "3",
        "--data", fake_cifar10(tmp_path / "data"), "--holdout", "0.5", "--out", out)
    et = ETRecord.load(out / "et.npz")
    assert et.meta["second_look"]["depth"] == 3
    second_pass = et.conv[3:] - times[:3]  # blocks 1-3 again, with the flip and the carried input measured
    assert not np.array_equal(et.conv, times) and np.all(np.abs(second_pass) < 1.0)


@pytest.mark.parametrize("argv, message", [
    (["--depth", "2"], "--depth 2 needs --second-look"),
    (["--second-look", "flip", "--base-has-second-look"], "nothing to splice"),
    ([], "nothing to splice"),
])
def test_mistakes_are_one_line_messages(tmp_path, monkeypatch, argv, message):
    base, _ = checkpoints(tmp_path)
    base_fixture(tmp_path / "plain", 3)
    with pytest.raises(SystemExit, match=message):
        run(monkeypatch, tmp_path / "plain", "--checkpoint", base, "--data", tmp_path, "--out", tmp_path, *argv)
