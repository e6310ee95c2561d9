"""Profiles and their file format: measuring, round trips, and clear errors for damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from einet.formats.npz import ProfileFormatError, read_arrays, write_arrays
from einet.formats.profiles import CSProfile, ETRecord


def make_cs(samples: int = 20, exits: int = 4) -> CSProfile:
    rng = np.random.default_rng(0)
    prediction = rng.integers(0, 3, (samples, exits))
    labels = rng.integers(0, 3, samples)
    return CSProfile(rng.random((samples, exits)).astype(np.float32), prediction, prediction == labels[:, None],
                     labels, {"split": "holdout"})


def make_et() -> ETRecord:
    t = np.array([1e-3, 2e-3, 3e-3])
    return ETRecord(t, t / 10, t * 1.1, t * 1.5, t / 9, t / 8, {"device": "cpu"})


def test_round_trips(tmp_path):
    cs = make_cs()
    loaded = CSProfile.load(cs.save(tmp_path / "cs.npz"))
    np.testing.assert_array_equal(loaded.confidence, cs.confidence)
    np.testing.assert_array_equal(loaded.correct, cs.correct)
    assert loaded.meta == {"split": "holdout"}
    et = ETRecord.load(make_et().save(tmp_path / "et.npz"))
    np.testing.assert_array_equal(et.conv, make_et().conv)
    assert et.profile.num_blocks == 3


def test_wrong_kind_version_and_damage(tmp_path):
    path = make_cs().save(tmp_path / "cs.npz")
    with pytest.raises(ProfileFormatError, match="holds a 'cs-profile', not a 'et-profile'"):
        ETRecord.load(path)
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ProfileFormatError, match="truncated or corrupt"):
        CSProfile.load(tmp_path / "cut.npz")
    write_arrays(tmp_path / "other.npz", "cs-profile", {"confidence": np.zeros((2, 3))})
    with pytest.raises(ProfileFormatError, match="misses the array 'prediction'"):
        CSProfile.load(tmp_path / "other.npz")
    write_arrays(tmp_path / "shape.npz", "et-profile", {n: np.ones(3) for n in
                                                        ("conv", "branch", "conv_p90", "conv_p99", "branch_p90")}
                 | {"branch_p99": np.ones(4)})
    with pytest.raises(ProfileFormatError, match="inconsistent"):
        ETRecord.load(tmp_path / "shape.npz")
    np.savez(tmp_path / "plain.npz", conv=np.ones(3))
    with pytest.raises(ProfileFormatError, match="no einet header"):
        read_arrays(tmp_path / "plain.npz", "et-profile")
    header = np.frombuffer(b'{"format": "einet", "version": 99, "kind": "et-profile"}', dtype=np.uint8)
    np.savez(tmp_path / "future.npz", __header__=header)
    with pytest.raises(ProfileFormatError, match="version 99"):
        read_arrays(tmp_path / "future.npz", "et-profile")
    with pytest.raises(ProfileFormatError, match="missing file"):
        read_arrays(tmp_path / "absent.npz", "et-profile")
    write_arrays(tmp_path / "neg.npz", "et-profile", {n: -np.ones(3) for n in
                                                      ("conv", "branch", "conv_p90", "conv_p99", "branch_p90",
                                                       "branch_p99")})
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        ETRecord.load(tmp_path / "neg.npz")


def test_no_pickle_and_no_partial_files(tmp_path):
    path = make_cs().save(tmp_path / "cs.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == {"__header__", "confidence", "prediction", "correct", "labels"}
    assert not list(tmp_path.glob("*.partial"))


def test_cs_profile_checks_its_arrays():
    cs = make_cs()
    with pytest.raises(ProfileFormatError, match="disagree"):
        CSProfile(cs.confidence, cs.prediction[:, :2], cs.correct, cs.labels)
    with pytest.raises(ProfileFormatError, match=r"\[0, 1\]"):
        CSProfile(cs.confidence + 1, cs.prediction, cs.correct, cs.labels)


def test_measured_profiles():
    torch = pytest.importorskip("torch")
    from einet.data import ImageArrays, ImageDataset
    from einet.models import build
    from einet.profiling import profile_cs, profile_et

    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=3, in_channels=1, width=0.125)
    record = profile_et(model, (1, 16, 16), warmup=2, repeats=5, progress=False, name="b_alexnet")
    assert record.conv.shape == (3,) and np.all(record.conv > 0) and np.all(record.branch > 0)
    assert np.all(record.conv_p99 >= record.conv_p90) and np.all(record.conv_p90 >= record.conv)
    assert record.meta["device"] == "cpu" and record.meta["batch_size"] == 1 and "torch" in record.meta
    rng = np.random.default_rng(0)
    arrays = ImageArrays(rng.integers(0, 255, (10, 16, 16, 1), dtype=np.uint8), np.arange(10) % 3, ("a", "b", "c"))
    cs = profile_cs(model, ImageDataset(arrays), batch_size=4, progress=False, split="holdout")
    assert cs.confidence.shape == (10, 3) and cs.meta["split"] == "holdout"
    with torch.no_grad():
        logits = model.eval()(ImageDataset(arrays).images)
    expected = torch.stack([lg.softmax(1).max(1).values for lg in logits], 1).numpy()
    np.testing.assert_allclose(cs.confidence, expected, atol=1e-6)
    np.testing.assert_array_equal(cs.correct, cs.prediction == cs.labels[:, None])
