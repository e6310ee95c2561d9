"""The bookkeeping of ``einet build`` (:mod:`einet.pipeline`): its output paths checked before any work,
and its stages, each declaring what it reads and writes, run or skipped by a key derived from those
declarations, so that a build stopped at any point (Ctrl-C, a kill, a crash) resumes where it stopped
when the same command runs again, and no input a stage reads can be left out of its key: a stage sees
only the config options it declares (reading another is an error)."""

from __future__ import annotations

import hashlib
import json
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._atomic import atomic_write
from .build_config import OPTIONS, SECTION_TYPES, BuildConfig
from .errors import EinetValueError
from .validation import open_regular, parse_json

if TYPE_CHECKING:
    from .data import ImageArrays, ImageDataset
    from .formats.split import HeldOutSplit

STAGES_FILE = "stages.json"


def check_paths(config: BuildConfig) -> None:
    """Refuse, before any work, a bundle or work folder that would replace or hold an input (the config,
    the data, a checkpoint, a measured profile), or each other, or that is something else already: a
    build replaces its bundle folder (keeping what it did not make: :func:`einet.formats.manifest.write_bundle`)
    and keeps its stage files in the work folder, which holds a stages.json from its creation on."""
    from .formats.manifest import is_bundle_folder

    bundle, work = config.path(config.output.bundle), config.path(config.output.work)
    assert bundle is not None and work is not None
    inputs = {"the config": config.file, "data.path": config.path(config.data.path)} | {
        name: config.path(config.option(name)) for name, option in OPTIONS.items() if option.metadata["reads_file"]}
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


@contextmanager
def torch_state(threads: int) -> Iterator[None]:
    """Torch's process-wide state for a build's work (its intra-op `threads`; the random state its seeds
    set), restored after: a library call leaves its caller's process as it found it."""
    import torch

    before = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@dataclass(frozen=True)
class BuildData:
    """The data every stage may read, split once; `facts` are what its key says of it: ``data`` (the split,
    which names the training data's fingerprint, and the normalisation), ``test_data`` (its fingerprint)."""

    train_all: ImageArrays
    train_part: ImageArrays
    holdout: ImageArrays
    test: ImageArrays
    split: HeldOutSplit
    normalisation: tuple[tuple[float, ...], tuple[float, ...]]  # mean, std
    datasets: dict[str, ImageDataset]  # train, holdout and test, normalised, not augmented
    facts: dict[str, Any]


@dataclass(frozen=True)
class StageWork:
    """What a stage's run may read and where it writes: the config as the stage declares it, the data, the
    files of the stages it declares it reads (in their order), its own output files."""

    config: BuildConfig
    data: BuildData
    reads: tuple[Path, ...]
    writes: tuple[Path, ...]
    log: Callable[[str], None]
    progress: bool


@dataclass(frozen=True)
class Stage:
    """One stage of a build: what it reads (config `options`, "section.option"; data `facts`, and the config's
    ``name``; the files the stages `after` wrote) and the files it `writes` in the work folder. Its key is
    derived from these alone (:func:`stage_key`)."""

    name: str
    run: Callable[[StageWork], None]
    writes: tuple[str, ...]
    options: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


class UndeclaredOptionError(RuntimeError):
    """A stage read a config option it does not declare: its key would not cover it (an einet bug)."""


class _Declared:
    """A config section of which a stage may read only the options it declares."""

    def __init__(self, stage: str, section: str, options: object, declared: set[str]) -> None:
        self._stage, self._section, self._options, self._declared = stage, section, options, declared

    def __getattr__(self, option: str) -> Any:
        if option not in self._declared:
            raise UndeclaredOptionError(f"stage {self._stage} reads {self._section}.{option}, which it does not "
                                        "declare: its key would not cover it")
        return getattr(self._options, option)


def declared_config(config: BuildConfig, stage: Stage) -> BuildConfig:
    """`config` as `stage` may read it: only the options it declares."""
    sections: dict[str, Any] = {section: _Declared(stage.name, section, getattr(config, section),
                                                   {name.split(".")[1] for name in stage.options
                                                    if name.startswith(section + ".")})
                                for section in SECTION_TYPES}
    return replace(config, **sections)


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def stage_key(stage: Stage, config: BuildConfig, facts: dict[str, Any], digests: dict[str, str]) -> str:
    """A SHA-256 of everything `stage` declares it reads: its options' values (a file option's file by its
    SHA-256), the data's facts, the digests of the files of the stages it reads."""
    from .formats.manifest import file_sha256

    def value(name: str) -> Any:
        given = config.option(name)
        return file_sha256(config.folder / given) if given is not None and OPTIONS[name].metadata["reads_file"] \
            else given

    return _sha256({"stage": stage.name, "options": {name: value(name) for name in stage.options},
                    "facts": {name: facts[name] for name in stage.facts},
                    "after": {name: digests[name] for name in stage.after}})


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

    def run_all(self, plan: list[Stage], config: BuildConfig, data: BuildData, progress: bool) -> None:
        """Each stage of `plan` in turn, run where its key changed or an output is missing."""
        from .formats.manifest import file_sha256

        facts = data.facts | {"name": config.name}
        digests: dict[str, str] = {}  # of each stage's files: a stage run again with another result re-runs
        files: dict[str, tuple[Path, ...]] = {}  # what reads them, and only then
        for stage in plan:
            reads = tuple(path for name in stage.after for path in files[name])
            work = StageWork(declared_config(config, stage), data, reads,
                             tuple(self.work / name for name in stage.writes), self.log, progress)
            self.run(stage.name, stage_key(stage, config, facts, digests), work.writes,
                     lambda: stage.run(work))  # noqa: B023  (called before the loop goes on)
            files[stage.name] = work.writes
            digests[stage.name] = _sha256([file_sha256(path) for path in work.writes])

    def run(self, name: str, key: str, outputs: tuple[Path, ...], make: Callable[[], None]) -> bool:
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
