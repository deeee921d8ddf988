"""The shared Lambda layer: third-party dependencies plus the ``ragline`` package.

Built without Docker: ``PipLayerBundler`` is a local bundler (``aws_cdk.ILocalBundling``)
that asks pip for Linux aarch64 CPython wheels (``--platform``/``--only-binary``), so the
layer matches the ARM_64 functions no matter which machine synthesizes. Installing needs
PyPI; with the context flag ``ragline:skipLayerBundling=true`` (unit tests) the layer is a
tiny placeholder directory instead and nothing is downloaded.

Bytecode: Lambda mounts a layer read-only, so Python cannot cache what it compiles there, and a
layer without ``.pyc`` files compiles every module it imports on every cold start. When a Python
of the runtime's version is on this machine (``python3.14``, or the one ``RAGLINE_LAYER_PYTHON``
names), the bundler compiles the whole layer with it, as unchecked-hash ``.pyc`` files (PEP 552:
valid whatever the file times in the zip, since the sources never change under a layer). Without
one it says so and ships sources only; bytecode from another version would be ignored.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, FileSystem, ILocalBundling, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from . import config as cfg

# Copied into the layer from the ragline package: everything except caches.
_PACKAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".DS_Store")
# Removed from the installed third-party tree: test suites and console scripts are never
# imported in Lambda, and pip's entry-point scripts point at the build machine's python.
_PRUNE_DIRS = ("bin",)
_PRUNE_GLOBS = ("numpy/**/tests", "numpy/tests", "**/__pycache__")


def pip_install_command(
    target: Path | str,
    *,
    python: str = sys.executable,
    requirements: Path = cfg.LAYER_REQUIREMENTS_FILE,
    constraints: Path | None = cfg.LAYER_CONSTRAINTS_FILE,
    python_version: str = cfg.PYTHON_VERSION,
    platforms: Sequence[str] = cfg.LAYER_PIP_PLATFORMS,
) -> list[str]:
    """The pip command that installs the layer's third-party packages into ``target``."""
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-compile"]
    for platform in platforms:
        command += ["--platform", platform]
    command += [
        "--only-binary=:all:",
        "--python-version", python_version,
        "--implementation", "cp",
        "--upgrade",
        "--target", str(target),
        "-r", str(requirements),
    ]
    if constraints is not None and Path(constraints).is_file():
        command += ["-c", str(constraints)]
    return command


@jsii.implements(ILocalBundling)
class PipLayerBundler:
    """Builds ``<output>/python`` with pip wheels for Lambda and the ragline package."""

    def __init__(self, package_dir: Path = cfg.RAGLINE_PACKAGE_DIR) -> None:
        self._package_dir = Path(package_dir)

    # jsii passes the BundlingOptions struct either as one argument or expanded as keywords.
    def try_bundle(self, output_dir: str, options: Any = None, **_kwargs: Any) -> bool:
        target = Path(output_dir) / "python"
        target.mkdir(parents=True, exist_ok=True)
        command = pip_install_command(target)
        print(f"[ragline layer] {' '.join(command)}", file=sys.stderr)
        result = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                "building the ragline Lambda layer failed (pip needs PyPI; for an offline synth "
                f"pass -c {cfg.SKIP_LAYER_BUNDLING_KEY}=true):\n{result.stdout[-4000:]}"
            )
        prune(target)
        shutil.copytree(self._package_dir, target / "ragline", ignore=_PACKAGE_IGNORE, dirs_exist_ok=True)
        compile_bytecode(target)
        return True


def runtime_interpreter(python_version: str = cfg.PYTHON_VERSION) -> str | None:
    """A Python of the Lambda runtime's version on this machine (``RAGLINE_LAYER_PYTHON``, else
    ``python<version>`` on PATH), or None. Only that version's bytecode is of use to the runtime."""
    candidate = os.environ.get("RAGLINE_LAYER_PYTHON") or shutil.which(f"python{python_version}")
    if not candidate:
        return None
    try:
        found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = (found.stdout or "").strip()
    if found.returncode != 0 or version != python_version:
        print(f"[ragline layer] {candidate} is Python {version or '?'}, not {python_version}: not used for bytecode",
              file=sys.stderr)
        return None
    return candidate


def compile_bytecode(target: Path, python_version: str = cfg.PYTHON_VERSION) -> bool:
    """Compile every module under ``target`` to unchecked-hash ``.pyc`` with the runtime's
    interpreter. False (and a notice) when this machine has none: the layer then works, but each
    cold start compiles what it imports."""
    interpreter = runtime_interpreter(python_version)
    if interpreter is None:
        print(f"[ragline layer] no Python {python_version} on this machine (set RAGLINE_LAYER_PYTHON to one): "
              "the layer ships without bytecode, and every cold start compiles the modules it imports",
              file=sys.stderr)
        return False
    command = [interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(target)]
    result = subprocess.run(command, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        # a file that does not compile (a template, a vendored Python 2 script) is never
        # imported either; the rest of the layer is compiled
        print(f"[ragline layer] compileall reported files it could not compile:\n{result.stdout[-2000:]}",
              file=sys.stderr)
    return True


def prune(target: Path) -> None:
    for name in _PRUNE_DIRS:
        shutil.rmtree(target / name, ignore_errors=True)
    for pattern in _PRUNE_GLOBS:
        for path in sorted(target.glob(pattern), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def layer_asset_hash() -> str:
    """Changes exactly when the layer's inputs change: pins, target platform, ragline source."""
    digest = hashlib.sha256()
    for part in (
        cfg.LAYER_REQUIREMENTS_FILE.read_bytes(),
        cfg.LAYER_CONSTRAINTS_FILE.read_bytes() if cfg.LAYER_CONSTRAINTS_FILE.is_file() else b"",
        cfg.PYTHON_VERSION.encode(),
        ",".join(cfg.LAYER_PIP_PLATFORMS).encode(),
        Path(__file__).read_bytes(),  # the bundling recipe itself
        b"bytecode" if runtime_interpreter() else b"sources only",
        FileSystem.fingerprint(str(cfg.RAGLINE_PACKAGE_DIR), exclude=["**/__pycache__", "*.pyc"]).encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


class SharedLayer(Construct):
    """One layer version used by every function."""

    def __init__(self, scope: Construct, construct_id: str, *, config: cfg.RaglineConfig) -> None:
        super().__init__(scope, construct_id)
        if config.skip_layer_bundling:
            code = lambda_.Code.from_asset(str(cfg.LAYER_PLACEHOLDER_DIR))
            description = "Ragline shared layer (PLACEHOLDER: synthesized with ragline:skipLayerBundling)"
        else:
            code = lambda_.Code.from_asset(
                str(cfg.LAYER_SOURCE_DIR),
                asset_hash_type=AssetHashType.CUSTOM,
                asset_hash=layer_asset_hash(),
                bundling=BundlingOptions(
                    # Never pulled: the local bundler always succeeds or raises.
                    image=DockerImage.from_registry("dummy"),
                    local=PipLayerBundler(),
                ),
            )
            description = f"Ragline shared layer: ragline package and its dependencies (Python {cfg.PYTHON_VERSION})"
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=code,
            compatible_runtimes=[cfg.LAMBDA_RUNTIME],
            compatible_architectures=[cfg.LAMBDA_ARCHITECTURE],
            description=description,
            removal_policy=RemovalPolicy.RETAIN if config.is_production else RemovalPolicy.DESTROY,
        )
