"""The inference forms' speed against eager (issue: fast blocks), on the committed trained networks.

The prepared form (BatchNorm folded, dropout gone, layouts chosen here) of each network is timed
against the network as trained, side by side in one run (einet.profiling.chain_times: every conv part
and exit on one input, one torch thread, alternated); the compiled form (AOTInductor packages of the
prepared network) too, for the VGG-16 only and only when timing (compiling it takes minutes; its
correctness is tests/test_compiled.py's). Goals, VGG-16 fine w0.25: prepared <= 0.6x eager, compiled
<= 0.45x. The whole table for five zoo networks: experiments/fast_blocks/forms.py.
Run: python -m pytest benchmarks/test_bench_forms.py --benchmark-only -s
"""

from __future__ import annotations

import pytest

from benchmarks.fixtures_lib import folder

torch = pytest.importorskip("torch")

from einet.formats.checkpoint import load_checkpoint  # noqa: E402
from einet.models.inference import InferenceForm, choose_form, verify  # noqa: E402
from einet.profiling import chain_times  # noqa: E402

GOALS = {"prepared": 0.6, "compiled": 0.45}  # VGG-16 fine w0.25: a form's time over eager at most


def _chain(network, x) -> None:
    """Every conv part and exit on `x`, as the runtime runs them."""
    with torch.inference_mode():
        h = x
        for i in range(network.num_exits):
            h = network.forward_block(i, h)
            network.forward_exit(i, h)


def _network(name: str):
    network, _ = load_checkpoint(folder(name) / "model.pt")
    return network.eval()


@pytest.mark.benchmark(group="inference forms")
@pytest.mark.parametrize("name", ["vgg16_fine_w025_cpu_light", "b_alexnet_w05_cpu"])
def test_the_prepared_form_against_eager(benchmark, speed_goal, name):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    eager = _network(name)
    x = torch.randn(8, 3, 32, 32)
    prepared = choose_form(eager, x[:1]).apply(eager)
    verify(eager, prepared, x)
    times = chain_times({"eager": eager, "prepared": prepared}, x[:1], rounds=5, repeats=10)
    ratio = float(times["prepared"].sum() / times["eager"].sum())
    print(f"\n{name}: eager {1e6 * times['eager'].sum():,.0f} us, prepared {1e6 * times['prepared'].sum():,.0f} us "
          f"({ratio:.2f}x)")
    benchmark(_chain, prepared, x[:1])
    if name.startswith("vgg16"):
        speed_goal(ratio <= GOALS["prepared"], f"prepared {ratio:.2f}x eager, goal {GOALS['prepared']}x")


@pytest.mark.benchmark(group="inference forms")
def test_the_compiled_form_against_eager(benchmark, speed_goal, tmp_path, monkeypatch):
    from einet.models.compiled import compile_parts, compiler, load_compiled

    if benchmark.disabled or compiler() is None:
        pytest.skip("compiling the VGG-16 takes minutes: only when timing, with a C++ compiler")
    torch.set_num_threads(1)
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path))
    eager = _network("vgg16_fine_w025_cpu_light")
    x = torch.randn(16, 3, 32, 32)
    contiguous = InferenceForm("prepared").apply(eager)
    entry = compile_parts(contiguous, x[:1], "bench",
                          lambda c: {"relative_error": verify(eager, c, x, one_at_a_time=True)}, log=lambda _: None)
    compiled = load_compiled(entry.name, eager.num_exits)
    times = chain_times({"eager": eager, "compiled": compiled}, x[:1], rounds=5, repeats=10)
    ratio = float(times["compiled"].sum() / times["eager"].sum())
    print(f"\ncompiled VGG-16: eager {1e6 * times['eager'].sum():,.0f} us, compiled "
          f"{1e6 * times['compiled'].sum():,.0f} us ({ratio:.2f}x)")
    benchmark(_chain, compiled, x[:1])
    speed_goal(ratio <= GOALS["compiled"], f"compiled {ratio:.2f}x eager, goal {GOALS['compiled']}x")
