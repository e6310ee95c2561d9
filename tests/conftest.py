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


@pytest.fixture(scope="session")
def compiled_bundle_files(tmp_path_factory):
    """A tiny bundle (3 blocks, no levers) compiled for one thread into a private cache: (the bundle, the
    cache folder); skips where it cannot be compiled here. Tests take :func:`compiled_bundle`."""
    pytest.importorskip("torch")
    from einet.models import compiled
    from tests.helpers import tiny_bundle

    if compiled.compiler() is None:
        pytest.skip("no C++ compiler")
    folder = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EINET_CACHE_DIR", str(folder / "cache"))
        return tiny_bundle(folder, "tiny", "compile = true\n"), folder / "cache"  # compiled, timed, selected


@pytest.fixture
def compiled_bundle(compiled_bundle_files, monkeypatch):
    """The tiny compiled bundle's path, its cache the user's cache (EINET_CACHE_DIR) for the test."""
    bundle, cache = compiled_bundle_files
    monkeypatch.setenv("EINET_CACHE_DIR", str(cache))
    return bundle
