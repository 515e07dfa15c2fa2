"""The Debian package the embedded set comes from: what it is, fetching it, reading it in memory.

The package's file tree is streamed from ``dpkg-deb --fsys-tarfile`` (a tar stream), keeping only
the unit definitions and the unit sprites, so the package is never unpacked to disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from gapan.data.imageset import DataError

PACKAGE = "wesnoth-1.16-data"
UPSTREAM = "The Battle for Wesnoth 1.16 (https://www.wesnoth.org)"
LICENSE = "GPL-2+"
# Where the unit definitions and sprites sit inside the package.
CORE = "usr/share/games/wesnoth/1.16/data/core/"
UNIT_CONFIGS = CORE + "units/"
UNIT_IMAGES = CORE + "images/"  # image paths in the .cfg files are relative to this folder


@dataclass(frozen=True)
class PackageContents:
    """What the cache is built from: unit .cfg texts and sprite files, keyed by their paths."""

    version: str
    configs: dict[str, str]  # path below data/core/units/ -> text
    images: dict[str, bytes]  # path as the .cfg files name it ("units/...png") -> PNG bytes


def _dpkg_deb() -> str:
    command = shutil.which("dpkg-deb")
    if command is None:
        raise DataError(
            "reading the Wesnoth package needs dpkg-deb (the Debian package `dpkg`); "
            "install it or prepare the cache on a Debian or Ubuntu machine."
        )
    return command


def read_package(deb: Path) -> PackageContents:
    """Read the unit definitions and sprites from a ``wesnoth-*-data`` .deb, in memory.

    Raises:
        DataError: naming the file when it is missing or not such a package.
    """
    deb = Path(deb).expanduser()
    if not deb.is_file():
        raise DataError(f"Debian package {deb} does not exist.")
    dpkg = _dpkg_deb()
    version = subprocess.run([dpkg, "--field", str(deb), "Version"], capture_output=True, text=True)
    if version.returncode != 0:
        raise DataError(f"{deb} is not a Debian package: {version.stderr.strip()}")
    configs: dict[str, str] = {}
    images: dict[str, bytes] = {}
    # Stream the package's file tree instead of unpacking the whole package to disk.
    problem = ""
    with subprocess.Popen(
        [dpkg, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                for member in archive:
                    name = member.name.removeprefix("./")
                    if not member.isfile():
                        continue
                    if name.startswith(UNIT_CONFIGS) and name.endswith(".cfg"):
                        text = archive.extractfile(member).read().decode("utf-8", errors="replace")
                        configs[name.removeprefix(UNIT_CONFIGS)] = text
                    elif name.startswith(UNIT_IMAGES + "units/") and name.endswith(".png"):
                        images[name.removeprefix(UNIT_IMAGES)] = archive.extractfile(member).read()
            process.stdout.read()  # the archive's end padding, so that dpkg-deb exits cleanly
        except tarfile.TarError as error:
            problem = str(error)
            process.stdout.close()  # stops dpkg-deb, which could block on a full pipe
        errors = process.stderr.read().decode(errors="replace").strip()
    if process.returncode != 0 or problem:
        raise DataError(f"dpkg-deb could not read {deb}: {errors} {problem}".strip())
    if not configs or not images:
        raise DataError(
            f"{deb} holds no unit definitions under /{UNIT_CONFIGS} or no sprites under "
            f"/{UNIT_IMAGES}units/; expected the {PACKAGE} package."
        )
    return PackageContents(version.stdout.strip(), configs, images)


def download_package(directory: Path) -> Path:
    """Fetch the package with ``apt-get download`` into `directory`; the .deb file's path.

    Raises:
        DataError: saying which command to run, or how to pass a downloaded package instead.
    """
    command = ["apt-get", "download", PACKAGE]
    advice = (
        f"Run `{' '.join(command)}` (after `sudo apt-get update` if apt does not know the "
        f"package) and pass the file: python -m gapan.data.wesnoth --deb PATH."
    )
    if shutil.which("apt-get") is None:
        raise DataError(
            f"cannot download {PACKAGE}: apt-get is not available here. Download the package "
            "on a Debian or Ubuntu machine and pass it: python -m gapan.data.wesnoth --deb PATH."
        )
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    if result.returncode != 0 and os.geteuid() == 0:
        # A fresh machine often has no package lists yet; root may fetch them once.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
        result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    found = sorted(directory.glob(f"{PACKAGE}_*.deb"))
    if result.returncode != 0 or not found:
        raise DataError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-500:]} {advice}")
    return found[0]
