"""`import einet` is the planner alone: numpy, no torch."""

import subprocess
import sys


def test_import_einet_does_not_import_torch():
    code = "import sys, einet; einet.search([0.5], einet.ETProfile([1], [1]), einet.Uniform(0, 2)); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
