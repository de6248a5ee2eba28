"""Both packages import cleanly, in either order, in a fresh interpreter; importing them,
``--version``/``--help`` and reading a certificate load no heavy dependency (torch, pyomo,
matplotlib: imported where they are used); the thread policy of the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.parametrize("statement", [
    "import oracles; import parallelepipedonn",
    "import parallelepipedonn; import oracles",
    "from oracles.milp import MilpOracle",
    "from parallelepipedonn.search import make_search",
    "from parallelepipedonn.cli import main",
])
def test_import_order_does_not_matter(statement):
    proc = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- lazy imports: what a light command or a plain import loads ------------------------------
HEAVY = ("torch", "pyomo", "matplotlib")


def _loaded(code: str, *args: str) -> set[str]:
    """The heavy top-level packages in ``sys.modules`` after running ``code`` in a fresh
    interpreter (``code`` may print more; the last line is the list)."""
    script = code + "\nimport sys\nprint(sorted({m.split('.')[0] for m in sys.modules}))\n"
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(eval(proc.stdout.strip().splitlines()[-1])) & {*HEAVY, "numpy", "onnx"}


def test_import_package_loads_no_heavy_module():
    assert _loaded("import parallelepipedonn, oracles") == set()


def test_public_names_resolve_lazily():
    import parallelepipedonn as ppn

    assert set(ppn.__all__) <= set(dir(ppn))
    for name in ppn.__all__:
        assert getattr(ppn, name) is not None, name
    ns: dict = {}
    exec(f"from parallelepipedonn import {', '.join(ppn.__all__)}", ns)
    import parallelepipedonn.certify
    import parallelepipedonn.recheck

    # importing a submodule of the same name keeps the package's function
    assert callable(ppn.certify) and ppn.certify is parallelepipedonn.certify
    assert ppn.recheck.__module__ == "parallelepipedonn.recheck"
    assert ppn.datasets.__name__ == "parallelepipedonn.datasets"  # submodules, as attributes


def test_oracles_names_resolve_lazily():
    import oracles
    import oracles.cascade
    from oracles.cascade import Cascade

    assert oracles.Cascade is Cascade and callable(oracles.cascade) and oracles.cascade.__module__ == "oracles"
    assert {"CrownOracle", "MilpOracle", "make_oracle"} <= set(dir(oracles))
    assert oracles.milp.MilpOracle is oracles.MilpOracle


def test_version_help_and_list_load_no_torch():
    wrapper = ("import sys\nfrom parallelepipedonn.cli import main\n"
               "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n")
    for argv in (["--version"], ["--help"], ["certify", "--help"], ["recheck", "--help"], ["list"]):
        assert _loaded(wrapper, *argv) <= {"numpy"}, argv


def test_oracle_descriptions_without_backends():
    code = "import oracles\nprint({n: e.description for n, e in oracles.oracle_entries().items()})"
    assert _loaded(code) <= {"numpy"}


def test_bab_and_dual_import_without_pyomo():
    assert not _loaded("import oracles.bab, parallelepipedonn.dual, parallelepipedonn.recheck") & {"pyomo",
                                                                                                   "matplotlib"}


def test_certificate_reads_without_torch(tmp_path):
    import parallelepipedonn as ppn
    from tests.nets import random_network

    net = random_network(0, [4, 6, 3])
    cert = ppn.certify(net, np.full(4, 0.5))
    path = tmp_path / "cert.json"
    cert.save(path)
    code = ("import sys\nfrom parallelepipedonn.certificate import Certificate\n"
            "c = Certificate.load(sys.argv[1])\nprint(c.status.value, c.apothem)")
    assert _loaded(code, str(path)) <= {"numpy"}


def test_default_certify_loads_neither_pyomo_nor_matplotlib():
    from parallelepipedonn.datasets import dataset_available

    if not dataset_available("mnist"):
        pytest.skip("no mnist sample")
    wrapper = "import sys\nfrom parallelepipedonn.cli import main\nassert main(sys.argv[1:]) == 0"
    loaded = _loaded(wrapper, "certify", "--dataset", "mnist", "--index", "0")
    assert "torch" in loaded and not loaded & {"pyomo", "matplotlib"}


# -- the thread policy -----------------------------------------------------------------------
@pytest.mark.parametrize("argv, env, expected", [
    ([], None, 1),
    (["--threads", "2"], None, 2),
    ([], "3", 3),
    (["--threads", "2"], "3", 2),
])
def test_cli_thread_policy(argv, env, expected, tmp_path):
    code = ("import sys, torch\nfrom parallelepipedonn.cli import main\n"
            f"assert main({argv!r} + ['info', '--model', sys.argv[1]]) == 0\n"
            "print(torch.get_num_threads())")
    from parallelepipedonn.onnx_export import save_onnx
    from tests.nets import random_network

    model = tmp_path / "m.onnx"
    save_onnx(random_network(0, [4, 8, 3]), model)
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PARALLELEPIPEDONN_THREADS")}
    if env is not None:
        environ["PARALLELEPIPEDONN_THREADS"] = env
    proc = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=300,
                          env=environ)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) == expected


def test_bad_thread_settings_are_usage_errors(tmp_path):
    from parallelepipedonn.errors import ConfigError
    from parallelepipedonn.threads import resolve_threads

    assert resolve_threads(0) is None and resolve_threads(4) == 4
    with pytest.raises(ConfigError):
        resolve_threads(-1)
    with pytest.raises(ConfigError, match="from 0 to 1024"):  # torch overflowed (2**31) or crashed (100,000)
        resolve_threads(100_000)
    env = {**os.environ, "PARALLELEPIPEDONN_THREADS": "many"}
    proc = subprocess.run([sys.executable, "-m", "parallelepipedonn.cli", "list"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2 and "PARALLELEPIPEDONN_THREADS" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "parallelepipedonn.cli", "--threads", "-1", "list"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "threads" in proc.stderr
