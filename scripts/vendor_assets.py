"""Copy the console's browser assets into coalition/web/static/vendor/, pinned.

Each package is fetched with the ordinary npm client (``npm pack NAME@VERSION``), its
tarball checked against the SHA-256 pinned below (a mismatch stops the script and writes
nothing), and the few files the pages load copied out with the package's licence. The
result is committed, so the app never downloads anything at run time; ``MANIFEST.json``
beside the files records version, licence, tarball hash and each file's hash, and a unit
test checks the files still match it.

    python3 scripts/vendor_assets.py          # re-vendor (needs npm and the registry)
    python3 scripts/vendor_assets.py --check  # only compare files with MANIFEST.json
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "coalition" / "web" / "static" / "vendor"
MANIFEST = VENDOR / "MANIFEST.json"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    tarball_sha256: str
    licence: str
    files: dict[str, str]  # path in the tarball → file name under vendor/<dir>/
    dir: str


PACKAGES = (
    Package(
        "chart.js",
        "4.5.1",
        "f540d98468457ac7a0aabb32006dfb066297e096c5ea063a5d80aa973d1c337a",
        "MIT",
        {"package/dist/chart.umd.min.js": "chart.umd.min.js", "package/LICENSE.md": "LICENSE.md"},
        "chartjs",
    ),
    Package(
        "react",
        "18.2.0",
        "a151f7caec911760e42b7a6f6f1dfcaba141fd11ff49e2af901a2eee0366297c",
        "MIT",
        {
            "package/umd/react.production.min.js": "react.production.min.js",
            "package/LICENSE": "LICENSE",
        },
        "react",
    ),
    Package(
        "react-dom",
        "18.2.0",
        "20a71e86b691f860c781f3732a85c7b3c63c4d3d9a803dca9dfe6ed0eb30e2ef",
        "MIT",
        {
            "package/umd/react-dom.production.min.js": "react-dom.production.min.js",
            "package/LICENSE": "LICENSE",
        },
        "react-dom",
    ),
    Package(
        "graphiql",
        "3.8.3",
        "1cadb1c2ca0dc51ea71fb4bb2680e6185e83fe400c9a62ca5fb9dfb922472bbd",
        "MIT",
        {
            "package/graphiql.min.js": "graphiql.min.js",
            "package/graphiql.min.css": "graphiql.min.css",
            "package/LICENSE": "LICENSE",
        },
        "graphiql",
    ),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(package: Package, into: Path) -> bytes:
    spec = f"{package.name}@{package.version}"
    out = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    [packed] = json.loads(out.stdout)
    data = (into / packed["filename"]).read_bytes()
    if _sha256(data) != package.tarball_sha256:
        raise SystemExit(
            f"{spec}: tarball sha256 {_sha256(data)}, pinned {package.tarball_sha256};"
            " nothing written"
        )
    return data


def vendor() -> None:
    manifest: dict[str, object] = {}
    extracted: dict[Path, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for package in PACKAGES:
            data = _fetch(package, Path(tmp))
            files: dict[str, str] = {}
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for member, name in package.files.items():
                    handle = tar.extractfile(member)
                    assert handle is not None, f"{package.name}: no {member}"
                    content = handle.read()
                    extracted[VENDOR / package.dir / name] = content
                    files[f"{package.dir}/{name}"] = _sha256(content)
            manifest[package.name] = {
                "version": package.version,
                "licence": package.licence,
                "tarball_sha256": package.tarball_sha256,
                "files": files,
            }
    for path, content in extracted.items():  # only once every package checked out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"vendored {len(PACKAGES)} packages into {VENDOR.relative_to(ROOT)}")


def check() -> list[str]:
    """What differs between the files and MANIFEST.json (empty: all as recorded)."""
    problems = []
    manifest = json.loads(MANIFEST.read_text())
    for package in PACKAGES:
        recorded = manifest.get(package.name)
        if recorded is None or recorded["version"] != package.version:
            problems.append(f"{package.name}: not vendored at {package.version}")
            continue
        for rel, digest in recorded["files"].items():
            path = VENDOR / rel
            if not path.exists() or _sha256(path.read_bytes()) != digest:
                problems.append(f"{rel}: missing or not as recorded")
    return problems


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        found = check()
        print("\n".join(found) or "vendored assets as recorded")
        sys.exit(1 if found else 0)
    vendor()
