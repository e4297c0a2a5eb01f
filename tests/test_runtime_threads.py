"""OMP_WAIT_POLICY: facelab sets PASSIVE before torch loads unless the user chose; make and the kernel spec set it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facelab import REPO_ROOT


def _run(code: str, **env_changes) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_sets_passive_when_unset():
    code = "import facelab, os, json; from facelab import runtime; print(json.dumps([os.environ['OMP_WAIT_POLICY'], runtime.omp_wait_policy()]))"
    value, info = json.loads(_run(code))
    assert value == "PASSIVE"
    assert info == {"value": "PASSIVE", "source": "facelab", "effective": True}


def test_user_setting_is_kept():
    code = "import facelab, os, json; from facelab import runtime; print(json.dumps(runtime.omp_wait_policy()))"
    info = json.loads(_run(code, OMP_WAIT_POLICY="ACTIVE"))
    assert info == {"value": "ACTIVE", "source": "environment", "effective": True}


def test_torch_imported_first_is_reported_and_setup_warns():
    code = (
        "import warnings, json, torch, facelab\n"
        "from facelab import runtime\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    runtime.setup('quick', 'cpu', 0, threads=1, style=False, verbose=False)\n"
        "print(json.dumps([runtime.omp_wait_policy()['effective'], [str(x.message) for x in w]]))"
    )
    effective, messages = json.loads(_run(code))
    assert effective is False
    assert any("OMP_WAIT_POLICY=PASSIVE" in m and "Import facelab first" in m for m in messages)


def test_makefile_and_kernel_spec_set_passive():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "export OMP_WAIT_POLICY ?= PASSIVE" in makefile
    assert "--env OMP_WAIT_POLICY PASSIVE" in makefile
    spec = Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    if not spec.exists():
        pytest.skip(f"no kernel spec at {spec} (run `make setup`)")
    assert json.loads(spec.read_text()).get("env", {}).get("OMP_WAIT_POLICY") == "PASSIVE", (
        f"{spec} does not set OMP_WAIT_POLICY; rerun `make setup` (the Makefile installs the kernel with --env)"
    )
