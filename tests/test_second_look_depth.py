"""scripts/second_look_depth.py: a shallower second look's profiles are cut from the full one's exactly."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_script

torch = pytest.importorskip("torch")

from einet.models import build  # noqa: E402
from einet.models.second_look import with_second_look  # noqa: E402
from einet.profiling import CSProfile, ETRecord, profile_cs  # noqa: E402

second_look_depth = load_script("second_look_depth")


def test_the_cut_is_the_shallower_networks_own_profile():
    torch.manual_seed(0)
    model = build("msdnet21", num_classes=10, in_channels=3, width=0.125).eval()
    n, depth = model.num_exits, 2
    images = torch.randn(6, 3, 32, 32)
    samples = torch.utils.data.TensorDataset(images, torch.arange(6) % 10)
    full = profile_cs(with_second_look(model), samples, progress=False)
    shallow = profile_cs(with_second_look(model, depth=depth), samples, progress=False)
    times = np.arange(1.0, 2 * n + 1) * 1e-4  # block i costs i units: the cut must keep blocks 1..d, n+1..n+d
    et = ETRecord(*(times.copy() for _ in ETRecord.TIMES))
    cut_et, cut_cs = second_look_depth.at_depth(et, full, depth)
    np.testing.assert_array_equal(cut_et.conv, np.r_[times[:depth], times[n:n + depth]])
    np.testing.assert_array_equal(cut_cs.prediction, shallow.prediction)
    np.testing.assert_array_equal(cut_cs.correct, shallow.correct)
    np.testing.assert_allclose(cut_cs.confidence, shallow.confidence, atol=1e-6)
    assert cut_cs.log_probs is not None and shallow.log_probs is not None
    np.testing.assert_allclose(cut_cs.log_probs.astype(np.float32), shallow.log_probs.astype(np.float32), atol=1e-3)


def test_write_et_writes_the_cut_the_selection_scores(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.125).eval()
    n = model.num_exits
    samples = torch.utils.data.TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6) % 10)
    full, base, out = tmp_path / "full", tmp_path / "base", tmp_path / "d2"
    for folder, network, count in ((full, with_second_look(model), 2 * n), (base, model, n)):
        folder.mkdir()
        profile_cs(network, samples, progress=False, split="holdout").save(folder / "cs-holdout.npz")
        times = np.arange(1.0, count + 1) * 1e-4
        ETRecord(*(times.copy() for _ in ETRecord.TIMES), meta={"model": folder.name}).save(folder / "et.npz")
    out.mkdir()
    monkeypatch.setattr("sys.argv", ["second_look_depth.py", str(full), "--base", str(base), "--reference", str(base),
                                     "--write-et", "2", str(out)])
    second_look_depth.main()
    written = ETRecord.load(out / "et.npz")
    cut, _ = second_look_depth.at_depth(ETRecord.load(full / "et.npz"), CSProfile.load(full / "cs-holdout.npz"), 2)
    np.testing.assert_array_equal(written.conv, cut.conv)
    np.testing.assert_array_equal(written.branch, cut.branch)
    np.testing.assert_array_equal(written.conv, np.array([1.0, 2.0, n + 1.0, n + 2.0]) * 1e-4)  # 2 blocks per pass
    assert written.meta["second_look"]["depth"] == 2 and written.meta["cut_from"] == "full"
