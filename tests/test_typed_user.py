"""A strictly typed user of the headline entry point type-checks: ``einet.load(p).infer(x)`` is an
ElasticRuntime's Answer to ``mypy --strict``, not an ``object`` or ``Any`` (issue 29)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python"

USER = textwrap.dedent('''
    from __future__ import annotations

    import numpy as np
    import torch

    import einet


    def first_prediction(path: str, x: torch.Tensor) -> int | None:
        return einet.load(path).infer(x, interrupt=0.001).prediction  # Any here would be an error: no-any-return


    def predict_image(path: str, image: np.ndarray) -> int | None:
        with einet.load(path, threads=1, inline=True) as runtime:
            answer: einet.Answer = runtime.infer(runtime.prepare(image))
            return answer.prediction


    def plan() -> float:
        et = einet.ETProfile(conv=[2e-3, 3e-3], branch=[5e-4, 1e-4])
        return einet.search([0.55, 0.9], et, einet.Uniform(0.0, et.total())).value
''')


@pytest.mark.slow
def test_a_strictly_typed_user_script_type_checks(tmp_path):
    pytest.importorskip("mypy")
    pytest.importorskip("torch")
    (tmp_path / "user.py").write_text(USER)
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
                           "--follow-imports", "silent", "user.py"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "MYPYPATH": str(PACKAGE)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
