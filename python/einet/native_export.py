"""A bundle exported for the Python-free program (``einet export-native BUNDLE OUT``; docs/design.md section 8,
"Without Python").

The export is a self-contained folder for a device that will not host an interpreter: the bundle's compiled
block and exit packages (``einet compile``: AOTInductor packages for this CPU, its instruction set and thread
count), and one text manifest, ``einet-native.txt``, that ``csrc/include/einet/native/bundle.hpp`` reads
(the program ``einet-run``, and any C++ application linking the CMake target ``einet::native``). Beside it,
for an EINet policy, ``session.txt``: its native planner as a session file (``OnlineSession.save()``).

The manifest: its first line the magic and the format's version, then one keyword and its values per line,
in this order (numbers as C99 hexadecimal floats, a double's own bits; names escaped, ``\\`` and newlines as
``\\\\``, ``\\n``, ``\\r``)::

    einet-native 1
    name NAME                     the bundle's name
    torch VERSION                 the torch the packages were compiled with (the program checks its own)
    threads T                     intra-op threads the packages and the ET-profile are for
    input C H W                   one image's shape
    mean M1 ... / std S1 ...      its per-channel normalisation (of pixels in [0, 1])
    classes K                     then K lines: class NAME
    blocks FILE1 ... FILEN        the block packages, beside it
    exits FILE1 ... FILEN         the exit packages
    conv S1 ... SN / branch ...   the device entry's ET-profile, in seconds (what einet-run --replay replays)
    horizon_ms H                  the exit-time distribution's horizon
    rule latest|best|ensemble
    weights W1 ... WN             the ensemble's weights (no values for latest and best)
    time_zero_class C             the time-zero answer's class, -1 for none
    policy mask 1 0 1 ...         a fixed plan; or: policy session FILE (EINet's session file, beside it)
    end

The export is the bundle's *static* runtime (``einet.load(BUNDLE, adapt=False)``): the same device entry,
policy and rule; the program does not adapt. A policy it cannot run without Python (neither a fixed plan nor
EINet reading its exits' confidence) is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EinetValueError

__all__ = ["MANIFEST", "SESSION", "NativeExport", "export_native"]

MAGIC, VERSION = "einet-native", 1
MANIFEST, SESSION = "einet-native.txt", "session.txt"


@dataclass(frozen=True)
class NativeExport:
    """What :func:`export_native` wrote: the folder, the policy and rule it runs, and the form the device
    entry's ET-profile timed (its plans and --replay use those times)."""

    folder: Path
    policy: str
    rule: str
    timed_form: str


def escaped(text: str) -> str:
    """A name on one manifest line: backslashes and line breaks escaped (the reader undoes it)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def _numbers(keyword: str, values: Sequence[float]) -> str:
    return " ".join([keyword, *(float(v).hex() for v in values)])


def native_policy(policy: Any, num_exits: int) -> tuple[str, str | None]:
    """The policy as the manifest holds it: (its ``policy`` line's values, the session file's text or None);
    EinetValueError naming it where the Python-free program cannot run it."""
    from .policies.native import native_plan

    plan = native_plan(policy, num_exits)
    if isinstance(plan, list):
        return "mask " + " ".join(map(str, plan)), None
    if plan is not None:
        return f"session {SESSION}", plan.session.save()
    raise EinetValueError(f"the policy {getattr(policy, 'name', type(policy).__name__)!r} cannot run without Python: "
                          "the Python-free program runs fixed plans and EINet reading its exits' confidence")


def manifest_text(*, name: str, torch_version: str, threads: int, input_spec: Any, classes: Sequence[str],
                  rule: Any, policy_line: str, blocks: Sequence[str], exits: Sequence[str], conv: Sequence[float],
                  branch: Sequence[float], horizon_ms: float) -> str:
    """The manifest's text (see the module's docstring)."""
    lines = [f"{MAGIC} {VERSION}", f"name {escaped(name)}", f"torch {torch_version}", f"threads {threads}",
             "input " + " ".join(str(n) for n in input_spec.shape), _numbers("mean", input_spec.mean),
             _numbers("std", input_spec.std), f"classes {len(classes)}",
             *(f"class {escaped(c)}" for c in classes), " ".join(["blocks", *blocks]), " ".join(["exits", *exits]),
             _numbers("conv", conv), _numbers("branch", branch), _numbers("horizon_ms", [horizon_ms]),
             f"rule {rule.name}", _numbers("weights", rule.weights or ()),
             f"time_zero_class {-1 if rule.time_zero_class is None else int(rule.time_zero_class)}",
             f"policy {policy_line}", "end"]
    return "\n".join(lines) + "\n"


def _check_out(out: Path, bundle_path: Path) -> None:
    """OUT may be new, an empty folder, or an earlier export (replaced); never the bundle or inside it."""
    resolved, source = out.resolve(), bundle_path.resolve()
    if resolved == source or source in resolved.parents:
        raise EinetValueError(f"{out} would write into the bundle {bundle_path}: give another folder")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise EinetValueError(f"{out} exists and is not a folder: give a new folder")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise EinetValueError(f"{out} is a folder that holds other files: give a new or empty folder "
                                  "(an earlier export is replaced)")
    if not out.parent.is_dir():
        raise EinetValueError(f"{out}: its folder {out.parent} does not exist")


def export_native(bundle: str | os.PathLike[str], out: str | os.PathLike[str], threads: int | None = None, *,
                  policy: Any = None, rule: Any = None) -> NativeExport:
    """Export the bundle (folder or packed file) for the Python-free program into the folder `out`: its compiled
    packages for this CPU and `threads` (default: the bundle's), the manifest and, for EINet, its session
    file. The static runtime's device entry, policy and rule (`policy`, `rule`: others instead, for tests and
    experiments; each must run natively). EinetValueError, before anything is written, for a bundle not
    compiled here (run ``einet compile``), a policy that needs Python, or an unusable `out`; an earlier
    export in `out` is replaced whole."""
    import torch

    from . import forms
    from ._atomic import process_umask
    from .bundle import read_bundle
    from .models.compiled import CompileError, load_compiled
    from .validation import MAX_THREADS, number

    read = read_bundle(bundle)
    out = Path(out)
    _check_out(out, Path(bundle))
    threads = read.threads if threads is None else int(number("threads", threads, 1, MAX_THREADS, integer=True))
    try:  # (first: `einet compile` also adds the device entry)
        network = load_compiled(forms._key(read, threads), read.num_exits)
    except CompileError as error:
        raise EinetValueError(f"{read.path} is not compiled for this CPU and {threads} thread"
                              f"{'s' * (threads != 1)} ({error}): run `einet compile {read.path} --threads "
                              f"{threads}` first") from None
    entry = read.entry("cpu", threads)
    et = read.et(entry).profile
    if policy is None:
        policy = read.policy(entry, et, None, read.predictor(entry))
    rule = entry.deployment.rule if rule is None else rule
    if rule.weights is not None and len(rule.weights) != read.num_exits:
        raise EinetValueError(f"the ensemble has {len(rule.weights)} weights, the network {read.num_exits} exits")
    policy_line, session = native_policy(policy, read.num_exits)
    packages = [*network.block_packages, *network.exit_packages]
    names = [f"{'block' if k < read.num_exits else 'exit'}-{k % read.num_exits}.pt2" for k in range(len(packages))]
    text = manifest_text(name=read.name, torch_version=torch.__version__.split("+")[0], threads=threads,
                         input_spec=read.input_spec, classes=read.classes, rule=rule, policy_line=policy_line,
                         blocks=names[:read.num_exits], exits=names[read.num_exits:], conv=et.conv.tolist(),
                         branch=et.branch.tolist(), horizon_ms=read.horizon_ms)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for package, name in zip(packages, names):
            shutil.copyfile(package, staging / name)
        if session is not None:
            (staging / SESSION).write_text(session, encoding="utf-8")
        (staging / MANIFEST).write_text(text, encoding="utf-8")
        staging.chmod(0o777 & ~process_umask())  # (mkdtemp's is 0o700)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return NativeExport(out, getattr(policy, "name", type(policy).__name__), rule.label(), read.form(entry).name)
