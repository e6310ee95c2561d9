"""The confidence-score predictor: training, file round trip, and the native MLP against torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet.formats.npz import ProfileFormatError  # noqa: E402
from einet.formats.profiles import CSProfile  # noqa: E402
from einet.predictor import (  # noqa: E402
    ConfidencePredictor,
    expected_calibration_error,
    fit_predictor,
    load_predictor,
    predict_numpy,
    random_observations,
    save_predictor,
)


def synthetic_cs(samples: int = 600, exits: int = 6, seed: int = 0) -> CSProfile:
    """Exits whose confidences share a per-sample difficulty: observing some tells about the rest."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(samples)
    depth = np.linspace(0.3, 0.9, exits)
    confidence = np.clip(depth[None, :] * (1 - 0.6 * difficulty[:, None]) + rng.normal(0, 0.05, (samples, exits)),
                         0, 1)
    correct = rng.random((samples, exits)) < confidence
    labels = np.zeros(samples, dtype=np.int64)
    prediction = np.where(correct, 0, 1)
    return CSProfile(confidence.astype(np.float32), prediction, correct, labels, {"split": "holdout"})


@pytest.mark.parametrize("target", ["confidence", "correctness"])
def test_native_predictor_matches_torch(target):
    torch.manual_seed(0)
    model = ConfidencePredictor(14, (32, 16), target).eval()
    native = model.to_native()
    assert native.num_exits == 14 and native.calibrated == (target == "correctness")
    rng = np.random.default_rng(1)
    masks = random_observations(200, 14, rng)
    observed = rng.random((200, 14))
    expected = predict_numpy(model, observed, masks)
    for row in range(200):
        np.testing.assert_allclose(native.predict(observed[row], masks[row]), expected[row], atol=1e-5, rtol=0)


def test_online_step_is_predict_then_search():
    torch.manual_seed(0)
    model = ConfidencePredictor(5, (16,), "correctness").eval()
    native = model.to_native()
    et = einet.ETProfile([1.0] * 5, [0.3] * 5)
    dist = einet.Uniform(0, et.total())
    observed = np.array([0.7, 0.0, 0.9, 0.0, 0.0])
    mask = np.array([True, False, True, False, False])
    step = einet.online_step(native, observed, mask, et, dist, start=3, elapsed=3.6, held_exit=2)
    scores = native.predict(observed, mask)
    np.testing.assert_allclose(step.scores, scores)
    assert step.held == pytest.approx(scores[2])
    plan = einet.search(scores, et, dist, start=3, elapsed=3.6, held=scores[2])
    np.testing.assert_array_equal(step.plan.mask, plan.mask)
    assert step.plan.value == pytest.approx(plan.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"held_exit": 1}, "held_exit=1 must be -1 or an observed exit"),
        ({"held_exit": 9}, "held_exit=9"),
        ({"observed": np.array([0.7, 0.0, 1.9, 0.0, 0.0])}, r"score\[2\] must be in \[0, 1\]"),
        ({"mask": np.ones(4, dtype=bool)}, r"observation mask must have shape \(5,\)"),
        ({"start": 7}, "start=7 is outside the model"),
    ],
)
def test_online_step_errors(changes, message):
    native = ConfidencePredictor(5, (8,)).to_native()
    et = einet.ETProfile([1.0] * 5, [0.3] * 5)
    arguments = {"observed": np.array([0.7, 0.0, 0.9, 0.0, 0.0]), "mask": np.array([1, 0, 1, 0, 0], dtype=bool),
                 "start": 3, "held_exit": 2}
    arguments |= changes
    with pytest.raises(ValueError, match=message):
        einet.online_step(native, arguments["observed"], arguments["mask"], et, einet.Uniform(0, 6.5),
                          start=arguments["start"], elapsed=1.0, held_exit=arguments["held_exit"])


def test_native_predictor_rejects_bad_weights():
    w = [np.zeros((8, 10)), np.zeros((5, 8))]
    b = [np.zeros(8), np.zeros(5)]
    assert einet.NativePredictor(w, b, True).num_exits == 5
    with pytest.raises(ValueError, match="layer 1 takes 7 inputs but layer 0 gives 8"):
        einet.NativePredictor([w[0], np.zeros((5, 7))], b, True)
    with pytest.raises(ValueError, match="2 x that many"):
        einet.NativePredictor([np.zeros((8, 9)), w[1]], b, True)
    with pytest.raises(ValueError, match="non-finite weight"):
        einet.NativePredictor([np.full((8, 10), np.nan), w[1]], b, True)
    with pytest.raises(ValueError, match="2 weight matrices but 1 bias"):
        einet.NativePredictor(w, b[:1], True)


def test_fitting_beats_the_dataset_mean_and_is_calibrated():
    train, test = synthetic_cs(samples=4000, seed=0), synthetic_cs(samples=2000, seed=1)
    model, report = fit_predictor(train, "correctness", hidden=(32, 32), epochs=30, progress=False)
    assert report.loss[-1] < report.loss[0]
    masks = np.zeros((test.num_samples, test.num_exits), dtype=bool)
    masks[:, :3] = True  # three exits seen: the rest should be predictable
    predicted = predict_numpy(model, test.confidence, masks)[:, 3:]
    truth = test.correct[:, 3:]
    trivial = np.broadcast_to(train.correct.mean(0)[3:], truth.shape)
    brier, brier_trivial = np.mean((predicted - truth) ** 2), np.mean((trivial - truth) ** 2)
    assert brier < brier_trivial
    assert expected_calibration_error(predicted, truth) < 0.1


def test_refuses_the_test_split_and_bad_targets():
    cs = synthetic_cs(samples=10)
    test_cs = CSProfile(cs.confidence, cs.prediction, cs.correct, cs.labels, {"split": "test"})
    with pytest.raises(ValueError, match="test-split"):
        fit_predictor(test_cs, progress=False)
    with pytest.raises(ValueError, match="unknown target"):
        ConfidencePredictor(3, target="accuracy")


def test_save_and_load(tmp_path):
    model, _ = fit_predictor(synthetic_cs(samples=100), "confidence", hidden=(8,), epochs=2, progress=False)
    loaded = load_predictor(save_predictor(tmp_path / "p.npz", model))
    observed = np.random.default_rng(0).random((5, 6))
    masks = np.zeros((5, 6), dtype=bool)
    masks[:, 0] = True
    np.testing.assert_array_equal(predict_numpy(loaded, observed, masks), predict_numpy(model, observed, masks))
    from einet.formats.npz import read_arrays, write_arrays

    arrays, meta = read_arrays(tmp_path / "p.npz", "predictor")
    arrays["weight1"] = arrays["weight1"][:, :3]
    write_arrays(tmp_path / "bad.npz", "predictor", arrays, meta)
    with pytest.raises(ProfileFormatError, match="weight1 must have shape"):
        load_predictor(tmp_path / "bad.npz")


def test_random_observations_look_like_online_states():
    masks = random_observations(1000, 8, np.random.default_rng(0))
    assert not masks[:, -1].any()  # the last exit is never observed before planning
    counts = masks.sum(1)
    assert counts.min() == 0 and counts.max() >= 6
