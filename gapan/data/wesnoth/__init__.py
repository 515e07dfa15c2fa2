"""The embedded default data set: unit sprites of The Battle for Wesnoth, one class per unit type.

The sprites come from Debian's ``wesnoth-1.16-data`` package (GPL-2+), fetched with
``apt-get download`` (or given as a file) and turned once into a prepared cache::

    <root>/images/<class>/<file>.png   RGB sprites, transparency composited on white
    <root>/classes.json                class -> files, counts, source package and version
    <root>/README.md                   provenance, licence and how the set was made

How sprites become classes (a unit type is a class) and how the classes are split is `METHOD`,
also written into the README. Related units (an advancement line, variations sharing sprites,
recolours) form a family, and a family is never split: an unseen class must not be a recolour or
an advancement of a seen one. Near-copies (animation frames a few pixels apart) are removed.

The package is read by `deb` (fetching and streaming the .deb), its unit definitions by `cfg`
(the WML .cfg files), and the cache is prepared by `cache`; this module loads a prepared cache
and names what the others import.

Run ``python -m gapan.data.wesnoth [--root DIR] [--deb FILE]`` to prepare the cache.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from gapan.data import families
from gapan.data.benchmarks import Source, data_root
from gapan.data.imageset import DataError, make_imageset
from gapan.data.wesnoth.cache import (
    FORMAT_VERSION,
    METHOD,
    PREPARATION,
    Preparation,
    build_cache,
    class_folder_name,
    composite_on_white,
    default_root,
    is_prepared,
    prepare,
    visible_pixels,
)
from gapan.data.wesnoth.cfg import (
    assign_images,
    expand_brackets,
    expand_macros,
    strip_image_functions,
    unit_image_references,
    unit_relations,
)
from gapan.data.wesnoth.deb import (
    CORE,
    LICENSE,
    PACKAGE,
    UNIT_CONFIGS,
    UNIT_IMAGES,
    UPSTREAM,
    PackageContents,
    download_package,
    read_package,
)

__all__ = [
    "CORE",
    "FORMAT_VERSION",
    "LICENSE",
    "METHOD",
    "PACKAGE",
    "PREPARATION",
    "RECALL_KS",
    "UNIT_CONFIGS",
    "UNIT_IMAGES",
    "UPSTREAM",
    "PackageContents",
    "Preparation",
    "assign_images",
    "build_cache",
    "class_folder_name",
    "composite_on_white",
    "default_root",
    "download_package",
    "expand_brackets",
    "expand_macros",
    "is_prepared",
    "load",
    "main",
    "prepare",
    "read_manifest",
    "read_package",
    "strip_image_functions",
    "unit_image_references",
    "unit_relations",
    "visible_pixels",
]

RECALL_KS = (1, 2, 4, 8)


def read_manifest(root: Path) -> dict:
    """The classes.json of a prepared cache.

    Raises:
        DataError: naming the folder and the command that prepares it.
    """
    root = Path(root).expanduser()
    path = root / "classes.json"
    if not path.is_file():
        raise DataError(
            f"{root} is not a prepared Wesnoth cache (no classes.json). Prepare it with "
            f"`python -m gapan.data.wesnoth --root {root}`, or leave data.root empty to use "
            "the default cache."
        )
    prepare_again = (
        f"delete {root} and prepare it again with `python -m gapan.data.wesnoth --root {root}`"
    )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        version = manifest.get("format") if isinstance(manifest, dict) else None
    except json.JSONDecodeError:
        raise DataError(f"{path} is damaged; {prepare_again}.") from None
    if version != FORMAT_VERSION:
        raise DataError(
            f"{root} holds the embedded set in format {version}, not the current format "
            f"{FORMAT_VERSION} (its splits and near-copy removal differ); {prepare_again}, or "
            "leave data.root empty to use the default cache, which prepares itself."
        )
    try:
        classes, seen, unseen = manifest["classes"], manifest["seen"], manifest["unseen"]
        if not isinstance(classes, dict) or not all(
            isinstance(files, list) for files in classes.values()
        ):
            raise TypeError
        if sorted([*seen, *unseen]) != sorted(classes):
            raise TypeError
        if not isinstance(manifest["families"], dict):
            raise TypeError
    except (KeyError, TypeError):
        raise DataError(f"{path} is damaged; {prepare_again}.") from None
    return manifest


def load(root: Path, split_seed: int = 0) -> Source:
    """The prepared cache at `root` as seen and unseen classes; lists files only.

    Split seed 0 is the prepared split (classes.json's seen and unseen); another draws another
    family-disjoint assignment of the same families (`families.split_families`), for studies
    that replicate a result across class splits.
    """
    root = Path(root).expanduser().absolute()
    if root.exists():  # a missing cache gets read_manifest's advice to prepare one there
        data_root(
            root,
            "a prepared Wesnoth cache: a folder holding classes.json and images/, as "
            "`python -m gapan.data.wesnoth --root FOLDER` prepares it; or leave data.root empty "
            "to use the default cache",
        )
    manifest = read_manifest(root)
    classes = manifest["classes"]
    if not (root / "images").is_dir():
        raise DataError(
            f"{root / 'images'} is missing; delete {root} and prepare it again with "
            f"`python -m gapan.data.wesnoth --root {root}`."
        )
    family_of = {name: family for family, names in manifest["families"].items() for name in names}
    if split_seed:
        seen, unseen = families.split_families(family_of, split_seed)
    else:
        seen, unseen = manifest["seen"], manifest["unseen"]

    def items(names: list[str]) -> Iterator[tuple[Path, str]]:
        return ((root / "images" / name / file, name) for name in names for file in classes[name])

    return Source(
        make_imageset(list(items(seen)), seen),
        make_imageset(list(items(unseen)), unseen),
        recall_ks=RECALL_KS,
        verified=True,
        families=family_of,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gapan.data.wesnoth",
        description="Prepare the Wesnoth unit sprite data set.",
    )
    parser.add_argument(
        "--root", type=Path, default=None, help=f"cache folder (default: {default_root()})"
    )
    parser.add_argument(
        "--deb",
        type=Path,
        default=None,
        help=f"an already downloaded {PACKAGE} .deb (default: apt-get download)",
    )
    arguments = parser.parse_args(argv)
    try:
        root = prepare(arguments.root, arguments.deb)
    except DataError as error:
        parser.exit(1, f"error: {error}\n")
    manifest = read_manifest(root)
    source = manifest["source"]
    print(f"Wesnoth unit sprites ({source['package']} {source['version']}) in {root}")
    print(
        f"{manifest['num_classes']} classes in {len(manifest['families'])} families, "
        f"{manifest['num_images']} images; {len(manifest['seen'])} seen (train + val) and "
        f"{len(manifest['unseen'])} unseen (test) classes"
    )
