"""`import einet` is the planner alone: numpy, no torch; the torch parts come when first used."""

import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_einet_does_not_import_torch():
    code = "import sys, einet; einet.search([0.5], einet.ETProfile([1], [1]), einet.Uniform(0, 2)); " \
           "einet.EinetError; einet.load; einet.read_bundle; print('torch' in sys.modules)"
    assert run(code) == "False"


def test_the_torch_parts_are_imported_when_first_used():
    code = "import einet, einet.runtime; print(einet.ElasticRuntime is einet.runtime.ElasticRuntime, " \
           "'ElasticRuntime' in dir(einet))"
    assert run(code) == "True True"
