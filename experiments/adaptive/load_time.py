"""How long `einet.load(bundle)` takes to the first answer, in a fresh process each time (torch
imported first: the time is the bundle's, not the interpreter's), and a repeat of save, load, save.

    python experiments/adaptive/load_time.py runs/vgg16_fine_deployed.einet --runs 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = """
import time, torch, einet
from einet.bundle import read_bundle
started = time.perf_counter()
runtime = einet.load({path!r})
bundle = read_bundle({path!r})
x = bundle.preprocess(bundle.timing_images()[:1])
answer = runtime.infer(x)
print(time.perf_counter() - started, answer.exit)
runtime.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    seconds = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", PROBE.format(path=args.bundle)], check=True, capture_output=True,
                             text=True).stdout.split()
        seconds.append(float(out[0]))
    seconds.sort()
    print(json.dumps({"bundle": args.bundle, "load_to_first_answer_s": seconds,
                      "median_s": seconds[len(seconds) // 2]}))


if __name__ == "__main__":
    main()
