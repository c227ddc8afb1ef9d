"""Refresh the vendored Can I Email dataset from the npm package `caniemail`.

Run from a checkout: ``python -m newsletter.clients.refresh`` (needs `npm` on PATH, and the
npm registry). It packs the newest `caniemail` release into a temporary folder, copies its
`data/caniemail.json` and `LICENSE` here and records the package version and dataset date in
`data/SOURCE.json`. Review the diff (and the client-support golden file) before committing.
"""

from __future__ import annotations

import json
import shutil

# bandit B404: only `npm pack` with fixed arguments and no shell.
import subprocess  # nosec B404
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from newsletter.clients.dataset import DATA_DIR

PACKAGE = "caniemail"


def pack(destination: Path) -> Path:
    """`npm pack caniemail` into `destination`; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: apt-get install npm, then run this again.")
    done = subprocess.run(  # noqa: S603  # nosec B603
        [npm, "pack", PACKAGE, "--json", "--pack-destination", str(destination)],
        check=True,
        capture_output=True,
        text=True,
    )
    filename = str(json.loads(done.stdout)[0]["filename"])
    return destination / filename


def vendor(tarball: Path, data_dir: Path = DATA_DIR) -> dict[str, str]:
    """Copy the dataset and licence out of an npm tarball; returns what SOURCE.json says."""
    with tarfile.open(tarball) as archive:
        manifest = json.load(_member(archive, "package/package.json"))
        dataset = _member(archive, "package/data/caniemail.json").read()
        licence = _member(archive, "package/LICENSE").read()
    data = json.loads(dataset)
    source = {
        "package": f"{manifest['name']}@{manifest['version']}",
        "license": manifest.get("license", ""),
        "repository": str(manifest.get("repository", "")),
        "dataset_updated": data["last_update_date"],
        "origin": "https://www.caniemail.com/ (data), via the npm package above",
    }
    (data_dir / "caniemail.json").write_bytes(dataset)
    (data_dir / "LICENSE").write_bytes(licence)
    (data_dir / "SOURCE.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    return source


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    member = archive.extractfile(name)
    if member is None:
        raise SystemExit(f"{name} is missing from the npm package; has its layout changed?")
    return member


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = vendor(pack(Path(tmp)))
    sys.stdout.write(f"vendored {source['package']} (data of {source['dataset_updated']})\n")


if __name__ == "__main__":
    main()
