"""The bookkeeping of ``einet build`` (:mod:`einet.pipeline`): its output paths checked before any work,
and its stages run or skipped by key, so that a build stopped at any point (Ctrl-C, a kill, a crash)
resumes where it stopped when the same command runs again."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._atomic import atomic_write
from .build_config import BuildConfig
from .errors import EinetValueError
from .validation import open_regular, parse_json

STAGES_FILE = "stages.json"


def check_paths(config: BuildConfig) -> None:
    """Refuse, before any work, a bundle or work folder that would replace or hold an input (the config,
    the data, a checkpoint, a measured profile), or each other, or that is something else already: a
    build replaces its bundle folder (keeping what it did not make: :func:`einet.formats.manifest.write_bundle`)
    and keeps its stage files in the work folder, which holds a stages.json from its creation on."""
    from .formats.manifest import is_bundle_folder

    out = config["output"]
    bundle, work = config.path(out["bundle"]), config.path(out["work"])
    assert bundle is not None and work is not None
    inputs = {"the config": config.file, "data.path": config.path(config["data"]["path"]),
              "network.checkpoint": config.path(config["network"]["checkpoint"]),
              "network.backbone_weights": config.path(config["network"]["backbone_weights"]),
              "profile.et": config.path(config["profile"]["et"])}
    outputs = {"output.bundle": bundle.resolve(), "output.work": work.resolve()}
    for name, path in outputs.items():
        for source, given in inputs.items():
            if given is None:
                continue
            other = given.resolve()
            if path == other or path in other.parents or other in path.parents:
                raise EinetValueError(f"{name} {path} and {source} {other} overlap: a build would replace or write "
                                      "into it; give another output path")
    bundle_path, work_path = outputs["output.bundle"], outputs["output.work"]
    if bundle_path == work_path or bundle_path in work_path.parents or work_path in bundle_path.parents:
        raise EinetValueError(f"output.bundle {bundle_path} and output.work {work_path} overlap: keep them apart")
    if bundle_path.exists() and not is_bundle_folder(bundle_path):
        raise EinetValueError(f"output.bundle {bundle_path} exists and is not an einet bundle: a build would "
                              "replace it")
    if work_path.exists() and (not work_path.is_dir() or (any(work_path.iterdir())
                                                           and not (work_path / STAGES_FILE).is_file())):
        raise EinetValueError(f"output.work {work_path} exists and is not a build's work folder (no {STAGES_FILE})")


class Stages:
    """Runs stages whose key changed, skips the others; records each one's key, wall time and peak memory.

    The record (stages.json) is written when the work folder is new, before any stage runs, and a stage's
    entry is removed before the stage starts to overwrite its outputs: whenever the build stops, every
    recorded stage is complete, and the same command resumes."""

    def __init__(self, work: Path, log: Callable[[str], None], force: bool = False) -> None:
        self.work, self.log, self.force = work, log, force
        self.file = work / STAGES_FILE
        self.record: dict[str, Any] = {}
        if not self.file.exists():
            self._save()
            return
        try:  # a damaged record only means every stage runs again
            with open_regular(self.file) as f:
                record = parse_json(f.read(1 << 20))
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and all(isinstance(v, dict) for v in record.values()):
            self.record = record

    def _save(self) -> None:
        with atomic_write(self.file) as f:
            f.write(json.dumps(self.record, indent=1).encode() + b"\n")

    def run(self, name: str, key: str, outputs: list[Path], make: Callable[[], None]) -> bool:
        done = self.record.get(name, {})
        if not self.force and done.get("key") == key and all(p.exists() for p in outputs):
            self.log(f"[{name}] unchanged: kept ({', '.join(p.name for p in outputs)})")
            return False
        self.log(f"[{name}] running")
        if self.record.pop(name, None) is not None:  # its outputs are about to change
            self._save()
        started = time.perf_counter()
        make()
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux
        self.record[name] = {"key": key, "seconds": round(time.perf_counter() - started, 1),
                             "peak_rss_gb_so_far": round(peak_gb, 2)}
        self._save()
        self.log(f"[{name}] done in {self.record[name]['seconds']:.0f} s (peak memory so far {peak_gb:.2f} GB)")
        return True
