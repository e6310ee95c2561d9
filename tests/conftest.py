"""Fixtures shared by test files: what is costly to make once per run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def compiled_tiny(tmp_path_factory):
    """A tiny 3-exit network's compiled blocks (MNIST-shaped input), and the native loop built, both into a
    private cache; skips where either cannot be built here."""
    torch = pytest.importorskip("torch")
    from einet.models import build, compiled

    if compiled.compiler() is None:
        pytest.skip("no C++ compiler")
    patch = pytest.MonkeyPatch()
    patch.setenv("EINET_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        torch.manual_seed(0)
        model = build("b_alexnet", num_classes=10, in_channels=1, width=0.125, exit_head="light").eval()
        folder = compiled.compile_parts(model, torch.randn(1, 1, 28, 28), "native-test", lambda net: {},
                                        log=lambda _: None)
        network = compiled.load_compiled(folder.name, model.num_exits)
        from einet.runtime.native import native_module

        if native_module() is None:
            pytest.skip("the native loop cannot be built here")
        yield network
    finally:
        patch.undo()
