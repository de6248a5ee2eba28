"""The README's examples run as written, and .ci/run runs the README's commands."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import parallelepipedonn as ppn
from oracles import oracle_entries
from tests.test_search import assert_robust_everywhere

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def section(title: str) -> str:
    start = README.index(title)
    return README[start:README.index("\n#", start + len(title))]


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    setup, certify, tests = (b.strip() for b in code_blocks("bash")[:3])
    assert setup in ci and certify.replace("c.json", '"$out/c.json"').replace("c.png", '"$out/c.png"') in ci
    assert tests in ci


def test_python_api_example_runs(tmp_path, monkeypatch):
    shutil.copy(ppn.default_model_path("mnist"), tmp_path / "model.onnx")
    image, _ = ppn.load_dataset("mnist", "test")[1]
    np.savetxt(tmp_path / "digit.csv", image)
    monkeypatch.chdir(tmp_path)
    block = next(b for b in code_blocks("python") if "load_onnx" in b)
    block = block.replace("label=7", f"label={int(ppn.load_onnx('model.onnx').predict(image)[0])}")
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "c.json").is_file() and (tmp_path / "c.png").is_file()


def test_plug_in_example_registers_a_working_sound_oracle():
    block = code_blocks("python")[-1]
    assert "register_oracle" in block
    if "interval" not in oracle_entries():
        exec(compile(block, "README.md", "exec"), {})
    net = ppn.load_onnx(ppn.default_model_path("mnist"))
    x, _ = ppn.load_dataset("mnist", "test")[0]
    cert = ppn.certify(net, x, config=ppn.CertifyConfig(oracle="interval", precision=1e-3))
    assert cert.oracle == "interval"
    if cert.status is ppn.Status.CERTIFIED:
        assert_robust_everywhere(net, cert.box, cert.label)
    crown = ppn.certify(net, x, config=ppn.CertifyConfig(precision=1e-3))
    assert crown.apothem >= (cert.apothem or 0.0)  # CROWN is at least as tight as intervals here


@pytest.mark.parametrize("name", sorted(oracle_entries()))
def test_oracle_table_lists_every_built_in_oracle(name):
    if name == "interval":  # registered by the plug-in example above
        pytest.skip("the README's plug-in example")
    assert re.search(rf"\| `{re.escape(name)}`( \(default\))? \|", section("## Oracles"))
