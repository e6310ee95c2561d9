"""Give a profiled multi-exit model an answer from time zero: a thumbnail classifier as exit 0.

Trains a linear classifier on 8x8 average-pooled thumbnails of the training split (the held-out
part excluded, as `einet train` does), times it on this CPU as its own first block (batch 1, one
thread, the way `einet profile` times blocks), and writes a copy of a fixture with that exit in
front: et.npz with the new block first, CS-profiles with its answers as exit 0 (the backbone's
exits are unchanged: the thumbnail block passes the input on), and the classifier's weights.

    python scripts/thumbnail_exit.py benchmarks/fixtures/vgg16_fine_w025_cpu_joint \
        --data ../shared/data/cifar10-jpeg.zip --out benchmarks/fixtures/vgg16_fine_w025_cpu_joint_thumbnail
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from einet import data
from einet.models.base import MultiExitNetwork
from einet.models.thumbnail import fit_thumbnail
from einet.profiling import CSProfile, ETRecord, profile_et


def with_exit_zero(cs: CSProfile, log_probs: np.ndarray, recipe: str) -> CSProfile:
    """`cs` with one more exit in front, answering with `log_probs` [S, C]."""
    prediction = log_probs.argmax(1)
    stored = log_probs.astype(np.float16)
    return CSProfile(np.concatenate([np.exp(log_probs.max(1, keepdims=True)), cs.confidence], 1).astype(np.float32),
                     np.concatenate([prediction[:, None], cs.prediction], 1),
                     np.concatenate([(prediction == cs.labels)[:, None], cs.correct], 1), cs.labels,
                     {**cs.meta, "recipe": recipe, "model": f"{cs.meta.get('model', 'model')} + thumbnail exit"},
                     np.concatenate([stored[:, None], cs.log_probs], 1) if cs.log_probs is not None else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data", required=True)
    parser.add_argument("--holdout", type=float, default=0.1, help="as given to `einet train`")
    parser.add_argument("--seed", type=int, default=0, help="as given to `einet train`")
    parser.add_argument("--size", type=int, default=8, help="thumbnail side")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_part, holdout = data.load(args.dataset, args.data, "train").split(args.holdout, seed=args.seed)
    test = data.load(args.dataset, args.data, "test")
    images = {name: data.dataset_for(args.dataset, arrays, train=False).images
              for name, arrays in (("train", train_part), ("holdout", holdout), ("test", test))}
    model = fit_thumbnail(images["train"], torch.from_numpy(train_part.labels), train_part.num_classes, args.size,
                          seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("holdout", "test"):
        cs = CSProfile.load(args.fixture / f"cs-{split}.npz")
        with torch.no_grad():
            log_probs = model(images[split]).log_softmax(1).numpy()
        print(f"thumbnail classifier, {split} accuracy {100 * (log_probs.argmax(1) == cs.labels).mean():.1f}%")
        recipe = f"{cs.meta.get('recipe', 'joint')} + thumbnail exit"
        with_exit_zero(cs, log_probs, recipe).save(args.out / f"cs-{split}.npz")
    timed = profile_et(MultiExitNetwork([torch.nn.Identity()], [model]), tuple(images["test"].shape[1:]),
                       repeats=2000, progress=False, samples=images["holdout"][:200], name="thumbnail exit")
    base = ETRecord.load(args.fixture / "et.npz")
    ETRecord(**{f: np.concatenate([getattr(timed, f), getattr(base, f)]) for f in ETRecord.TIMES},
             meta={**base.meta, "thumbnail_exit": timed.meta}).save(args.out / "et.npz")
    torch.save(model.state_dict(), args.out / "thumbnail.pt")
    print(f"thumbnail block {1e6 * timed.conv[0]:.1f} us + exit {1e6 * timed.branch[0]:.1f} us; the network's first "
          f"block {1e6 * base.conv[0]:.1f} us + exit {1e6 * base.branch[0]:.1f} us; wrote {args.out}")


if __name__ == "__main__":
    main()
