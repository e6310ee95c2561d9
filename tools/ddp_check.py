"""Does training across K processes match one process? `einet train` under torchrun, 1 process vs K.

Runs ``torchrun --standalone --nproc_per_node=1`` and ``--nproc_per_node=K`` of ``python -m einet
train`` on the same data, epochs, seed and global batch (each of the K processes takes batch/K and
a shard of every epoch's order), then prints each run's per-exit test accuracy, the largest
difference in percentage points (the check: at most 1 pp), and the throughput ratio (training
samples per second of wall time, per-epoch test evaluation included; K processes split the
threads of the one). Default data: the MNIST slice embedded in the package (2,250 training images
after the 10% hold-out, 1,000 test images); ``--dataset cifar10 --data DIR`` for a CIFAR-10 folder.

    python tools/ddp_check.py                  # K = 2, b_alexnet at width 0.25, 10 epochs
    python tools/ddp_check.py --threads 1 --json ddp.json   # one thread per process in both runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib.resources import as_file, files
from pathlib import Path


def run(nproc: int, args: argparse.Namespace, data: str, folder: Path) -> dict:
    threads = max(1, args.threads // nproc)
    out = folder / f"np{nproc}.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "einet", "train", "--dataset", args.dataset, "--data", data, "--model", args.model,
               "--width", str(args.width), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--seed", str(args.seed), "--threads", str(threads), "--device", "cpu",
               "--quiet", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    summary["samples_per_second"] = summary["train_samples"] * args.epochs / summary["seconds_total"]
    summary["threads_per_process"] = threads
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2, help="K, the processes of the distributed run")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data", help="dataset folder (default: the embedded MNIST slice)")
    parser.add_argument("--model", default="b_alexnet")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (a multiple of --nproc)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="torch threads of the one process; each of the K gets threads / K")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, as_file(files("einet") / "resources") as embedded:
        data = args.data or str(embedded)
        one = run(1, args, data, Path(tmp))
        many = run(args.nproc, args, data, Path(tmp))
    difference = [100 * (b - a) for a, b in zip(one["test_accuracy_per_exit"], many["test_accuracy_per_exit"])]
    worst = max(abs(d) for d in difference)
    ratio = many["samples_per_second"] / one["samples_per_second"]
    result = {
        "data": f"{args.dataset} ({'embedded slice' if not args.data else args.data}), {one['train_samples']} "
                f"training samples",
        "model": f"{args.model} width {args.width}", "epochs": args.epochs, "global_batch": args.batch_size,
        "seed": args.seed, "cpu_count": os.cpu_count(),
        "runs": {str(s["world_size"]): {k: s[k] for k in ("world_size", "threads_per_process", "seconds_total",
                                                        "samples_per_second", "test_accuracy_per_exit")}
                 for s in (one, many)},
        "difference_pp_per_exit": difference, "max_abs_difference_pp": worst, "within_1pp": worst <= 1.0,
        "throughput_ratio": ratio,
    }
    print(f"{'processes':>9}  {'threads':>7}  {'seconds':>7}  {'samples/s':>9}  test accuracy per exit (%)")
    for s in (one, many):
        accuracy = " ".join(f"{100 * a:5.1f}" for a in s["test_accuracy_per_exit"])
        print(f"{s['world_size']:>9}  {s['threads_per_process']:>7}  {s['seconds_total']:7.1f}  "
              f"{s['samples_per_second']:9.1f}  {accuracy}")
    print(f"difference (pp, {args.nproc} - 1): {' '.join(f'{d:+.1f}' for d in difference)}; max |difference| "
          f"{worst:.1f} pp: {'within' if worst <= 1.0 else 'NOT within'} 1 pp")
    print(f"throughput ratio ({args.nproc} processes / 1): {ratio:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
