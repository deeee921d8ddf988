"""Size of the shared Lambda layer (third-party dependencies + ragline, arm64, no torch),
zipped, and what takes the room. Builds the layer exactly as the CDK app does (PipLayerBundler
in infra_cdk/layer.py: pip --platform manylinux aarch64), so it needs PyPI.

    .venv/bin/python bench/layer_size.py
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

from _common import REPO, write

sys.path.insert(0, str(REPO))
from infra_cdk.layer import PipLayerBundler


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "layer"
        out.mkdir()
        if not PipLayerBundler().try_bundle(str(out)):
            sys.exit("layer bundling failed (needs PyPI)")
        zpath = Path(tmp) / "layer.zip"
        sizes: dict[str, int] = {}
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(out)
                    z.write(f, rel.as_posix())
                    top = rel.parts[1] if len(rel.parts) > 2 else rel.parts[-1]
                    top = top.split("-")[0] if top.endswith((".dist-info", ".libs")) else top
                    sizes[top] = sizes.get(top, 0) + z.getinfo(rel.as_posix()).compress_size
        unzipped = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        zipped = zpath.stat().st_size
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:12]
    write("layer_size", {
        "zipped_mb": round(zipped / 2**20, 1), "unzipped_mb": round(unzipped / 2**20, 1),
        "largest_zipped_mb": {k: round(v / 2**20, 2) for k, v in top}, "target": "<= 50 MB zipped",
    })


if __name__ == "__main__":
    main()
