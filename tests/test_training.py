"""Training: joint and branch-only, atomic resumable checkpoints, reproducible seeds."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from einet.data import ImageArrays, ImageDataset  # noqa: E402
from einet.formats.checkpoint import load_checkpoint  # noqa: E402
from einet.models import build  # noqa: E402
from einet.training import TrainConfig, exit_accuracies, train  # noqa: E402

SPEC = {"name": "b_alexnet", "num_classes": 3, "in_channels": 1, "width": 0.125}


def toy_dataset(count: int = 96) -> ImageDataset:
    """Three easily separable classes: bright top, bright left, dark."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 3
    images = rng.integers(0, 40, (count, 16, 16, 1), dtype=np.uint8)
    images[labels == 0, :8] += 200
    images[labels == 1, :, :8] += 200
    return ImageDataset(ImageArrays(images, labels, ("top", "left", "dark")), augment=False)


def make_model():
    spec = dict(SPEC)
    return build(spec.pop("name"), **spec)


def test_joint_training_learns_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = make_model()
    data = toy_dataset()
    config = TrainConfig(epochs=6, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine", seed=0)
    history = train(model, data, data, config, checkpoint=tmp_path / "m.pt", model_spec=SPEC, progress=False)
    assert len(history.loss) == 6 and history.loss[-1] < history.loss[0]
    assert history.test_accuracy[-1][-1] > 0.9
    restored, _state = load_checkpoint(tmp_path / "m.pt")
    assert exit_accuracies(restored, data) == exit_accuracies(model, data)
    assert not (tmp_path / "m.pt.partial").exists()


def test_bf16_autocast_and_channels_last_train_and_hand_the_model_back_contiguous():
    """Mixed precision on the CPU (the same code path as on CUDA, where it is the default): the
    convolutions run in bfloat16 and channels-last, the weights stay float32, and it still learns."""
    torch.manual_seed(0)
    model, data = make_model(), toy_dataset()
    seen = []
    # (a one-channel input is contiguous in every layout: the first conv could not tell)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    hook = conv.register_forward_hook(lambda m, inputs, out: seen.append((out.dtype, inputs[0].is_contiguous(
        memory_format=torch.channels_last))) if m.training else None)
    config = TrainConfig(epochs=6, batch_size=16, optimizer="adam", lr=3e-3, schedule="cosine", precision="bf16",
                         channels_last=True)
    history = train(model, data, data, config, progress=False)
    hook.remove()
    assert seen and all(item == (torch.bfloat16, True) for item in seen)
    assert history.loss[-1] < history.loss[0] and history.test_accuracy[-1][-1] > 0.9
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    auto = TrainConfig()
    assert (auto.autocast_dtype, auto.memory_format) == (None, torch.contiguous_format)  # CPU: plain fp32, NCHW
    with pytest.raises(TypeError, match="channels_last"):
        TrainConfig(channels_last="yes")


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch):
    import einet.training.loop as training

    data = toy_dataset()
    torch.manual_seed(0)
    straight = train(make_model(), data, None, TrainConfig(epochs=2, batch_size=32, seed=3), progress=False)

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    real_save = training.save_checkpoint
    monkeypatch.setattr(training, "save_checkpoint", save_then_interrupt)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(make_model(), data, None, TrainConfig(epochs=2, batch_size=32, seed=3), checkpoint=tmp_path / "c.pt",
              model_spec=SPEC, progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    with pytest.raises(ValueError, match="resume it with the same settings"):
        train(make_model(), data, None, TrainConfig(epochs=5, batch_size=32, seed=3), checkpoint=tmp_path / "c.pt",
              progress=False)
    torch.manual_seed(0)
    resumed = train(make_model(), data, None, TrainConfig(epochs=2, batch_size=32, seed=3),
                    checkpoint=tmp_path / "c.pt", model_spec=SPEC, progress=False)
    assert len(resumed.loss) == 2
    assert resumed.loss == pytest.approx(straight.loss, rel=1e-4)


def test_branch_only_training_keeps_the_backbone(tmp_path):
    model = make_model()
    before = {k: v.clone() for k, v in model.blocks.state_dict().items()}
    train(model, toy_dataset(), None, TrainConfig(epochs=1, batch_size=32, freeze_backbone=True), progress=False)
    after = model.blocks.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"epochs": 0}, "epochs and batch_size"),
        ({"lr": 0.0}, r"lr must lie in \(0, inf\]"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"schedule": "warm"}, "unknown schedule"),
        ({"precision": "fp16"}, "unknown precision"),
    ],
)
def test_bad_config(config, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**config)


def test_bad_exit_weights_and_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="exit_weights must be 3"):
        train(make_model(), toy_dataset(), None, TrainConfig(exit_weights=[1.0, 1.0]), progress=False)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable einet checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
