"""Compiled blocks: every block and exit of a network as a frozen AOTInductor package for this CPU.

``torch.export`` then ``torch._inductor.aoti_compile_and_package`` turn each part (block i's conv part,
exit i) into native code with its weights frozen in, its convolutions oneDNN's with prepacked weights
(``mkldnn__convolution_pointwise``); measured on this project's CPU, a chain of such packages runs in
well under half the eager time, where ``torch.compile`` per block called from Python is slower than
eager (its guards cost more than a block). A package is fixed to its input's shape and strides, to the
thread count it was compiled for and to the CPU's instruction set.

A package is native code, so a bundle never carries one: :func:`compile_parts` writes them into the
user's cache (:func:`einet.data.cache_dir`, ``compiled/<key>``) under a key of everything they depend
on (the network file's SHA-256, the variant, torch's version, the CPU's instruction set, the threads),
each package with its SHA-256 in an index that carries an HMAC under the user's cache secret; an entry
that was changed, planted or never verified is never loaded (:func:`load_compiled` raises
:class:`CompileError`, and the caller runs the prepared form instead, saying so in one line).
Packages are loaded with torch's C++ loader directly: Python's ``aoti_load_package`` first probes the
compiler, seconds on a cold start.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..errors import EinetValueError
from .base import MultiExitNetwork

COMPILED_FORMAT = 1
_INDEX, _MAC = "index.json", "index.hmac"
_PREPACKED = "mkldnn__convolution_pointwise"  # oneDNN's convolution on prepacked weights, in the wrapper
_SIMD = re.compile(r"(sse|ssse|avx|fma|f16c|amx|vnni|neon|asimd|sve)")


class CompileError(EinetValueError):
    """Blocks that could not be compiled, or a cache entry that is missing, changed or not verified."""


def compiler() -> str | None:
    """The C++ compiler AOTInductor would use here, or None (then only the prepared form runs)."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def instruction_set() -> str:
    """The CPU's SIMD extensions (packages are compiled for them), from /proc/cpuinfo where it exists."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(flag for flag in line.split(":", 1)[1].split() if _SIMD.match(flag)))
    return platform.machine()


def cache_key(network_sha256: str, variant: Mapping[str, Any], threads: int) -> str:
    """The cache entry of a network's packages: what they depend on, hashed."""
    what = {"format": COMPILED_FORMAT, "network": network_sha256, "variant": dict(variant), "threads": threads,
            "torch": torch.__version__, "machine": platform.machine(), "isa": instruction_set()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _entry(key: str) -> Path:
    from ..data.folder import cache_dir

    return cache_dir() / "compiled" / key


class _Part(nn.Module):
    """Block i's conv part or exit i of `network`, as a module torch.export can trace."""

    def __init__(self, network: MultiExitNetwork, i: int, exit: bool) -> None:
        super().__init__()
        self.network, self.i, self.exit = network, i, exit

    def forward(self, h: Any) -> Any:
        return self.network.forward_exit(self.i, h) if self.exit else self.network.forward_block(self.i, h)


def _names(n: int) -> list[tuple[str, int, bool]]:
    return [(f"{'exit' if exit else 'block'}-{i}", i, exit) for i in range(n) for exit in (False, True)]


@contextlib.contextmanager
def _freezing() -> Iterator[None]:
    """Inductor's freezing on (weights constant-folded and prepacked), for this compile only: without it a
    package silently calls the generic convolution, slower than eager."""
    from torch._inductor import config

    before = os.environ.get("TORCHINDUCTOR_FREEZING")
    os.environ["TORCHINDUCTOR_FREEZING"] = "1"
    try:
        with config.patch(freezing=True):
            yield
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_FREEZING", None)
        else:
            os.environ["TORCHINDUCTOR_FREEZING"] = before


def _prepacked(package: Path) -> bool:
    """Whether every convolution in the package's wrapper is oneDNN's on prepacked weights."""
    with zipfile.ZipFile(package) as archive:
        source = "".join(archive.read(name).decode(errors="replace") for name in archive.namelist()
                         if name.endswith("wrapper.cpp"))
    return _PREPACKED in source and "aoti_torch_cpu_convolution(" not in source


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compile_parts(network: MultiExitNetwork, example: torch.Tensor, key: str,
                  verify: Callable[[MultiExitNetwork], dict[str, float]],
                  log: Callable[[str], None] = print) -> Path:
    """Compile every part of `network` (eval mode, prepared) for inputs like `example` ([1, ...]) with this
    thread's torch threads, load them, `verify` them (the compiled network against `network`; it raises
    CompileError), and keep them in the cache under `key`; its folder. CompileError for what fails."""
    if compiler() is None:
        raise CompileError("no C++ compiler found (g++, c++, clang++ or $CXX): compiled blocks need one")
    folder = _entry(key)
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        parts: dict[str, dict[str, str]] = {}
        index: dict[str, Any] = {"format": COMPILED_FORMAT, "key": key, "parts": parts}
        with _freezing(), torch.no_grad():
            h: Any = example
            for name, i, exit in _names(network.num_exits):
                log(f"  compiling {name}")
                try:
                    program = torch.export.export(_Part(network, i, exit), (h,))
                    convolutions = any("convolution" in str(node.target) for node in program.graph.nodes)
                    package = Path(torch._inductor.aoti_compile_and_package(
                        program, package_path=str(staging / f"{name}.pt2"), inductor_configs={"freezing": True}))
                except Exception as error:  # torch.export and Inductor raise many kinds: the reason, in one line
                    raise CompileError(f"{name} did not compile: {type(error).__name__}: "
                                       f"{str(error).splitlines()[0] if str(error) else ''}"[:300]) from None
                if convolutions and not _prepacked(package):
                    raise CompileError(f"{name}: its convolutions were not compiled to oneDNN's prepacked ones")
                parts[name] = {"file": package.name, "sha256": _sha256(package)}
                if not exit:
                    h = network.forward_block(i, h)
        index["verified"] = verify(_load(staging, parts, network.num_exits))
        _sign(staging, index)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _sign(folder: Path, index: dict[str, Any]) -> None:
    from ..data.folder import cache_secret

    text = json.dumps(index, sort_keys=True).encode()
    (folder / _INDEX).write_bytes(text)
    (folder / _MAC).write_text(hmac.new(cache_secret(folder.parent), text, hashlib.sha256).hexdigest())


def load_compiled(key: str, num_exits: int) -> CompiledNetwork:
    """The compiled network in the cache entry `key`, after checking its index's HMAC and every package's
    SHA-256; CompileError saying why otherwise (none compiled, changed, or for another network)."""
    from ..data.folder import cache_secret
    from ..validation import parse_json

    folder = _entry(key)
    try:
        text, mac = (folder / _INDEX).read_bytes(), (folder / _MAC).read_text().strip()
    except OSError:
        raise CompileError("no compiled blocks for this network, device and thread count (einet compile)") from None
    if not hmac.compare_digest(mac, hmac.new(cache_secret(folder.parent), text, hashlib.sha256).hexdigest()):
        raise CompileError(f"the compiled blocks in {folder} were changed: compile again (einet compile)")
    index = parse_json(text)
    parts = index.get("parts") if isinstance(index, dict) else None
    if index.get("key") != key or not isinstance(parts, dict) or set(parts) != {n for n, _, _ in _names(num_exits)}:
        raise CompileError(f"the compiled blocks in {folder} are for another network: compile again")
    for name, part in parts.items():
        if _sha256(folder / part["file"]) != part["sha256"]:
            raise CompileError(f"the compiled {name} in {folder} was changed: compile again (einet compile)")
    return _load(folder, parts, num_exits)


def _load(folder: Path, parts: Mapping[str, Any], num_exits: int) -> CompiledNetwork:
    loaded = {name: CompiledPart(folder / part["file"]) for name, part in parts.items()}
    return CompiledNetwork([loaded[f"block-{i}"] for i in range(num_exits)],
                           [loaded[f"exit-{i}"] for i in range(num_exits)]).eval()  # (a runtime runs it as is)


class CompiledPart(nn.Module):
    """One package, run by torch's C++ loader (its input and output structure read once, not per call)."""

    def __init__(self, package: Path) -> None:
        super().__init__()
        self.package = package  # (the native loop loads the same package itself)
        self._loader = torch._C._aoti.AOTIModelPackageLoader(str(package), "model", False, 1, -1)
        self._out = pytree.treespec_loads(self._loader.get_call_spec()[1])
        # A tensor, or a tuple or list of tensors (a second look's, an MSDNet's scales), is packed and unpacked
        # directly: pytree's general walk costs ~15 us a call, a third of a light exit's whole time
        flat = not self._out.is_leaf() and all(child.is_leaf() for child in self._out.children())
        self._rebuild: Any = (lambda out: out[0]) if self._out.is_leaf() else \
            tuple if flat and self._out.type is tuple else \
            (lambda out: out) if flat and self._out.type is list else \
            (lambda out: pytree.tree_unflatten(out, self._out))

    def run(self, h: Any) -> Any:
        if isinstance(h, torch.Tensor):
            leaves = [h]
        elif type(h) in (tuple, list) and all(isinstance(t, torch.Tensor) for t in h):
            leaves = list(h)
        else:
            leaves = pytree.tree_leaves(h)
        return self._rebuild(self._loader.run(leaves))

    def forward(self, h: Any) -> Any:
        return self.run(h)


class CompiledNetwork(MultiExitNetwork):
    """A network whose blocks and exits are packages: called directly, without nn.Module's call path."""

    def __init__(self, blocks: list[CompiledPart], exits: list[CompiledPart]) -> None:
        super().__init__(list(blocks), list(exits))
        self._block_runs = tuple(block.run for block in blocks)
        self._exit_runs = tuple(branch.run for branch in exits)
        self.block_packages = tuple(block.package for block in blocks)  # for the native loop
        self.exit_packages = tuple(branch.package for branch in exits)

    def forward_block(self, i: int, h: Any) -> Any:
        return self._block_runs[i](h)

    def forward_exit(self, i: int, h: Any) -> torch.Tensor:
        return self._exit_runs[i](h)  # type: ignore[no-any-return]
