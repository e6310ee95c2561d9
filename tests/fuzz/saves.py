"""Fault injection for einet's file writers (``write_arrays``, ``save_checkpoint``): SIGKILLs mid-save
and concurrent writers with a reader. Prints what happened; exits 1 if any file was ever corrupt or
any writer crashed.

    python tests/fuzz/saves.py                 # 500 SIGKILLs per writer, then the race
    python tests/fuzz/saves.py --kills 50 --saves 100

SIGKILL: a child saves the same path in a loop, is killed after a random 0-20 ms, and the file is
read back: it must be complete and self-consistent (every value equals the stamp in its metadata).
A temporary file left behind shows that the kill landed mid-save. Race: two writers save the same
path while a reader reads it without pause. POSIX only (fork server, SIGKILL).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from einet.formats.checkpoint import read_checkpoint, save_checkpoint
from einet.formats.npz import read_arrays, write_arrays

VALUES = 50_000  # per save (400 KB): a save takes about 10 ms


def save(kind: str, path: str, stamp: int) -> None:
    values = np.full(VALUES, stamp, dtype=np.float64)
    if kind == "arrays":
        write_arrays(path, "et-profile", {"conv": values}, {"stamp": stamp})
    else:
        module = torch.nn.Linear(1, 1)
        module.weight = torch.nn.Parameter(torch.from_numpy(values.reshape(-1, 1)))
        save_checkpoint(path, module, None, stamp=stamp)


def check(kind: str, path: str) -> int:
    """The file's stamp; raises if it is unreadable or inconsistent."""
    if kind == "arrays":
        arrays, meta = read_arrays(path, "et-profile")
        stamp, values = meta["stamp"], arrays["conv"]
    else:
        state = read_checkpoint(Path(path))
        stamp, values = state["stamp"], state["model"]["weight"].numpy().ravel()
    if values.size != VALUES or not (values == stamp).all():
        raise ValueError(f"inconsistent file (stamp {stamp})")
    return int(stamp)


def save_forever(kind: str, path: str, started) -> None:  # type: ignore[no-untyped-def]
    stamp = os.getpid() * 100_000
    started.set()
    while True:
        stamp += 1
        save(kind, path, stamp)


def writer(kind: str, path: str, first: int, count: int) -> None:
    for k in range(count):
        save(kind, path, first + k)


def reader(kind: str, path: str, stop, results) -> None:  # type: ignore[no-untyped-def]
    reads = corrupt = 0
    while not stop.is_set():
        try:
            check(kind, path)
        except (ValueError, OSError) as error:
            corrupt += 1
            if corrupt <= 3:
                print(f"  corrupt read: {type(error).__name__}: {error}"[:300], file=sys.stderr)
        reads += 1
    results.put((reads, corrupt))


def kill_a_saver(context, kind: str, path: str, pause: float, timeout: float = 60.0) -> int | None:  # type: ignore[no-untyped-def]
    """Start a process saving `path` over and over, SIGKILL it `pause` seconds later: its exit code."""
    started = context.Event()
    process = context.Process(target=save_forever, args=(kind, path, started))
    process.start()
    started.wait(timeout)
    time.sleep(pause)
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout)
    return process.exitcode  # type: ignore[no-any-return]


def kills(context, kind: str, folder: Path, count: int, rng: np.random.Generator) -> dict[str, int]:  # type: ignore[no-untyped-def]
    path = str(folder / f"{kind}.bin")
    save(kind, path, 1)
    counts = {"kills": 0, "mid_save": 0, "intact": 0, "corrupt": 0}
    for _ in range(count):
        before = set(os.listdir(folder))
        counts["kills"] += kill_a_saver(context, kind, path, float(rng.uniform(0, 0.02))) == -signal.SIGKILL
        counts["mid_save"] += len(set(os.listdir(folder)) - before) > 0  # its temporary file stayed
        try:
            check(kind, path)
            counts["intact"] += 1
        except (ValueError, OSError) as error:
            counts["corrupt"] += 1
            print(f"  corrupt after a kill: {error}"[:300], file=sys.stderr)
    return counts


def race(context, kind: str, folder: Path, saves: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    path = str(folder / f"race-{kind}.bin")
    save(kind, path, 0)
    stop, results = context.Event(), context.Queue()
    read_process = context.Process(target=reader, args=(kind, path, stop, results))
    writers = [context.Process(target=writer, args=(kind, path, 10**6 * (w + 1), saves)) for w in range(2)]
    read_process.start()
    for process in writers:
        process.start()
    for process in writers:
        process.join()
    stop.set()
    reads, corrupt = results.get(timeout=300)
    read_process.join()
    crashes = sum(process.exitcode != 0 for process in writers)
    try:
        check(kind, path)
        final = "intact"
    except (ValueError, OSError):
        final, corrupt = "corrupt", corrupt + 1
    leftovers = [name for name in os.listdir(folder) if name.startswith(f".race-{kind}.bin.")]
    return {"saves": 2 * saves, "writer_crashes": crashes, "reads": reads, "corrupt_reads": corrupt,
            "final_file_" + final: 1, "temporary_files_left": len(leftovers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs per writer (default 500)")
    parser.add_argument("--saves", type=int, default=300, help="saves per racing writer (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "einet.profiling", "einet.training.loop"])
    rng = np.random.default_rng(args.seed)
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("arrays", "checkpoint"):
            folder = Path(scratch) / kind
            folder.mkdir()
            started = time.perf_counter()
            counts = kills(context, kind, folder, args.kills, rng)
            print(f"SIGKILL {kind:10s}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                  + f" ({time.perf_counter() - started:.0f} s)")
            failed |= counts["corrupt"] > 0 or counts["intact"] != args.kills
            started = time.perf_counter()
            counts = race(context, kind, folder, args.saves)
            print(f"race    {kind:10s}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                  + f" ({time.perf_counter() - started:.0f} s)")
            failed |= counts["writer_crashes"] > 0 or counts["corrupt_reads"] > 0
    print("FAILED" if failed else "OK: no corrupt file, no writer crash")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
