#!/usr/bin/env bash
# Train, profile and fit predictors for the zoo models that have no fixture yet, on this CPU.
#
#   bash experiments/zoo/train_zoo.sh NAME [NAME ...]      (names: see the table below)
#
# Each step is skipped when its output exists and training resumes from its last epoch, so an
# interrupted run picks up where it stopped. Results: runs/NAME.pt (checkpoint, not committed),
# benchmarks/fixtures/NAME/ (ET- and CS-profiles, three predictors, and model.pt: the weights in
# float16, when they are <= 5 MB). One torch thread per job: run two jobs side by side on two cores (the
# ET-profile is then measured while the other job trains: re-profile on an idle machine for clean timings).
set -euo pipefail
export OMP_NUM_THREADS=1  # every step on one core (fit-predictor and the fp16 export take no --threads)
CIFAR=../shared/data/cifar10-jpeg.zip
MNIST=../shared/data/mnist

# name -> zoo model, width, epochs, dataset, data
declare -A PLAN=(
  [flex_vgg16_w025_cpu]="flex_vgg16 0.25 12 cifar10 $CIFAR"
  [resnet50_fine_w0125_cpu]="resnet50_fine 0.125 6 cifar10 $CIFAR"
  [msdnet21_w025_cpu]="msdnet21 0.25 3 cifar10 $CIFAR"
  [msdnet40_w0125_cpu]="msdnet40 0.125 2 cifar10 $CIFAR"
  [b_alexnet_w025_mnist_cpu]="b_alexnet 0.25 3 mnist $MNIST"
  [vgg16_fine_w025_mnist_cpu]="vgg16_fine 0.25 3 mnist $MNIST"
)

for name in "$@"; do
  if [[ -z "${PLAN[$name]:-}" ]]; then
    echo "unknown name $name; known: ${!PLAN[*]}" >&2
    exit 2
  fi
  read -r model width epochs dataset data <<<"${PLAN[$name]}"
  out=benchmarks/fixtures/$name
  ckpt=runs/$name.pt
  mkdir -p runs "$out"
  if [[ ! -e runs/$name.done ]]; then
    einet train --model "$model" --width "$width" --epochs "$epochs" --dataset "$dataset" --data "$data" \
      --threads 1 --quiet --out "$ckpt"
    touch "runs/$name.done"
  fi
  [[ -e $out/cs-test.npz ]] || einet profile --checkpoint "$ckpt" --dataset "$dataset" --data "$data" \
      --threads 1 --quiet --out-dir "$out"
  [[ -e $out/predictor.npz ]] || einet fit-predictor --cs "$out/cs-holdout.npz" --out "$out/predictor.npz"
  [[ -e $out/predictor-confidence.npz ]] || einet fit-predictor --cs "$out/cs-holdout.npz" --target confidence \
      --out "$out/predictor-confidence.npz"
  [[ -e $out/predictor-ensemble.npz ]] || einet fit-predictor --cs "$out/cs-holdout.npz" --rule ensemble \
      --time-zero --out "$out/predictor-ensemble.npz"
  [[ -e $out/model.pt ]] || python - "$ckpt" "$out/model.pt" <<'PY'
import os, sys
from einet.models import load_checkpoint, save_checkpoint
model, state = load_checkpoint(sys.argv[1])
save_checkpoint(sys.argv[2], model.half(), state["spec"])
if os.path.getsize(sys.argv[2]) > 5_000_000:  # the repo keeps small weights only
    os.remove(sys.argv[2])
PY
  echo "$name done"
done
