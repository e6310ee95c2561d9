"""The reader fuzzer (tests/fuzz/readers.py): its classifier and mutations, and a short run of it.

The long run (10,000 mutations of each file kind) is the script's job; here 150 of each must give
no silent wrong load, crash or hang, and the classifier itself must tell those apart (for
checkpoints too: a (model, state) pair, compared tensor by tensor).
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from einet.formats.checkpoint import load_checkpoint
from einet.formats.npz import ProfileFormatError
from einet.formats.profiles import CSProfile, ETRecord
from tests.fuzz import readers as fuzz

ROOT = Path(__file__).resolve().parents[1]
ET = ROOT / "benchmarks" / "fixtures" / "b_alexnet_w025_mnist_cpu" / "et.npz"
CHECKPOINT = ET.with_name("model.pt")


def raises(error: BaseException) -> Callable[[], Any]:
    """A load that raises `error`."""
    def load() -> Any:
        raise error
    return load


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("seeds")
    fuzz.write_seeds(directory)
    return Path(directory)


def test_classifier_tells_refusals_identical_loads_wrong_loads_and_crashes() -> None:
    original = ETRecord.load(ET)
    refused = fuzz.refusals("et")

    assert fuzz.classify(lambda: ETRecord.load(ET), original, refused) == ("identical", "")
    assert fuzz.classify(raises(ProfileFormatError("damaged")), original, refused)[0] == "refused"
    for error in (TypeError("x"), KeyError("x"), OverflowError("x"), RecursionError("x"), MemoryError(),
                  IndexError("x"), FileNotFoundError("x"), ValueError("not a ProfileFormatError")):
        outcome, detail = fuzz.classify(raises(error), original, refused)
        assert outcome == "CRASH" and type(error).__name__ in detail
    changed: list[Callable[[Any], Any]] = [
        lambda r: r.__class__(**{**r.__dict__, "conv": r.conv * 2}),  # other values
        lambda r: r.__class__(**{**r.__dict__, "conv": r.conv.astype(np.float32)}),  # same values, other dtype
        lambda r: r.__class__(**{**r.__dict__, "conv": r.conv[None]}),  # other shape
        lambda r: r.__class__(**{**r.__dict__, "meta": {**r.meta, "repeats": True}}),  # 400 -> True
        lambda r: r.__class__(**{**r.__dict__, "meta": {k: v for k, v in r.meta.items() if k != "dtype"}}),
        lambda r: "a string",
        lambda r: None,
    ]
    for change in changed:
        assert fuzz.classify(lambda change=change: change(ETRecord.load(ET)), original, refused)[0] == "DIFFERENT"
    # deployments refuse with any ValueError; -0.0 is not 0.0, NaN is NaN, 0 is 0.0
    assert fuzz.classify(raises(ValueError("bad")), original, fuzz.refusals("deployment"))[0] == "refused"
    assert fuzz.difference([0.0], [-0.0]) is not None
    assert fuzz.difference({"a": float("nan")}, {"a": float("nan")}) is None
    assert fuzz.difference({"a": 0.0}, {"a": 0}) is None
    assert fuzz.difference((True,), (1,)) is not None


def test_classifier_compares_checkpoints_tensor_by_tensor() -> None:
    """A checkpoint load is (model, state): every tensor of the state, its spec and the model's
    weights must be the original's, bit for bit."""
    original = load_checkpoint(CHECKPOINT)
    refused = fuzz.refusals("checkpoint")
    assert fuzz.classify(lambda: load_checkpoint(CHECKPOINT), original, refused) == ("identical", "")

    class Damaged(ValueError):
        pass

    assert fuzz.classify(raises(Damaged("checksum")), original, refused)[0] == "refused"
    for error in (TypeError("x"), KeyError("x"), RuntimeError("x"), EOFError(), OverflowError("x")):
        assert fuzz.classify(raises(error), original, refused)[0] == "CRASH"

    def one_weight_changed() -> Any:  # the state's weights: one element one ulp off
        model, state = load_checkpoint(CHECKPOINT)
        weights = state["model"].copy()
        key = next(k for k, v in weights.items() if v.is_floating_point() and v.numel())
        weights[key] = weights[key].clone()
        flat = weights[key].view(-1)
        flat[0] = torch.nextafter(flat[0], torch.tensor(np.inf, dtype=flat.dtype))
        return model, {**state, "model": weights}

    outcome, detail = fuzz.classify(one_weight_changed, original, refused)
    assert outcome == "DIFFERENT" and "[1]['model']" in detail and "element 0" in detail, detail

    def model_weight_changed() -> Any:  # the model's weights, the state untouched
        model, state = load_checkpoint(CHECKPOINT)
        with torch.no_grad():
            next(model.parameters()).view(-1)[-1] *= -1
        return model, state

    outcome, detail = fuzz.classify(model_weight_changed, original, refused)
    assert outcome == "DIFFERENT" and "[0].state_dict()" in detail, detail
    model, state = original
    assert fuzz.difference(original, (model, {**state, "spec": {**state["spec"], "width": 0.5}})) is not None
    assert fuzz.difference(torch.zeros(3), torch.zeros(3, dtype=torch.float64)) is not None
    assert fuzz.difference(torch.zeros(3), -torch.zeros(3)) is not None  # bit for bit: -0.0 is not 0.0
    assert fuzz.difference(torch.full((2,), float("nan")), torch.full((2,), float("nan"))) is None


def test_mutations_replay_and_target_the_zip_directory(seeds: Path, tmp_path: Path) -> None:
    for kind in fuzz.KINDS:
        files = fuzz.read_seeds(seeds, kind)
        for index in range(40):
            assert fuzz.mutation(kind, 3, index, files)[1:] == fuzz.mutation(kind, 3, index, files)[1:]
    files = fuzz.read_seeds(seeds, "cs")
    labels = [fuzz.mutation("cs", 0, index, files)[1] for index in range(600)]
    in_directory = [label for label in labels if ":cd-" in label]
    assert len(in_directory) >= len(labels) / 3
    assert all(":cd[" in label or ":eocd." in label for label in in_directory)
    assert len({label.split(":")[1].split("@")[0].split("[")[0] for label in labels}) == len(fuzz.ZIP_MUTATIONS)
    # the seeds are the same bytes from run to run (zip times fixed), so a replay sees the same file
    again = fuzz.write_seeds(tmp_path)
    for name in [name for names in again.values() for name in names]:
        assert (seeds / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_json_mutations_are_hostile(seeds: Path) -> None:
    files = fuzz.read_seeds(seeds, "deployment")
    labels = [fuzz.mutation("deployment", 0, index, files)[1] for index in range(400)]
    for how in ("json-value", "json-delete-key", "json-add-key", "bitflip", "truncate"):
        assert any(f":{how}" in label for label in labels), how
    assert any("=deep(" in label for label in labels) and any("=10**400(" in label for label in labels)


def test_a_directory_comment_length_that_swallows_the_last_entries_is_refused(seeds: Path) -> None:
    """Found by the fuzzer: a bit flip in the last-but-k central-directory entry's comment length
    made zipfile read the entries after it as a comment, and the CS-profile loaded without its
    log-probabilities."""
    seed = fuzz.read_seeds(seeds, "cs")[0]
    original = CSProfile.load(seeds / seed.name)
    assert original.has_log_probs
    start, _ = seed.cd
    data, p, flipped = bytearray(seed.data), start, 0
    end = data.rfind(b"PK\x05\x06")
    while data[p:p + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<HHH", data, p + 28)
        mutant = bytearray(data)
        struct.pack_into("<H", mutant, p + 32, end - (p + 46 + n + m))  # the entries after it, as its comment
        (seeds / "swallowed.npz").write_bytes(mutant)
        outcome, detail = fuzz.classify(lambda: CSProfile.load(seeds / "swallowed.npz"), original,
                                        fuzz.refusals("cs"))
        assert outcome in ("refused", "identical"), detail
        p, flipped = p + 46 + n + m + k, flipped + 1
    assert flipped >= 5


@pytest.mark.slow
def test_a_short_run_finds_nothing() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.fuzz.readers", "--mutations", "150",
                           "--workers", "1", "--seed", "0"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert "mutations" in done.stdout, done.stderr[-3000:]
    for kind in fuzz.KINDS:  # checkpoints included
        assert any(line.split()[:2] == [kind, "150"] for line in done.stdout.splitlines()), (kind, done.stdout)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
