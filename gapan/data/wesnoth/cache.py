"""The prepared cache: the unit sprites of the package filtered, grouped into families and split,
then written as class folders with classes.json and a README (`METHOD` says how).

`prepare` builds it once, beside its final place, and renames it in; `build_cache` is the build
itself, step by step.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gapan.data import families
from gapan.data.imageset import DataError
from gapan.data.wesnoth.cfg import assign_images, unit_relations
from gapan.data.wesnoth.deb import (
    LICENSE,
    PACKAGE,
    UPSTREAM,
    PackageContents,
    download_package,
    read_package,
)
from gapan.files import cache_root

# Part of the cache's folder name and of classes.json: raise it whenever the prepared images or
# splits change, so that old caches (and the features cached from them) are never reused.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Preparation:
    """How sprites are filtered; written into classes.json and the README of every cache."""

    # A unit keeps its class only with at least this many sprites left.
    min_images: int = 10
    # Frames with fewer visible pixels (shadows, the last frames of a fade-out) show almost nothing.
    min_visible_pixels: int = 200
    # Side of the RGB thumbnails (bilinear, values in [0, 1]) that near-copies are measured on.
    thumbnail_size: int = 16
    # Two sprites whose thumbnails differ by less than this (mean absolute difference per value)
    # are copies: only the first is kept, within a class and across classes.
    near_copy_distance: float = 0.01
    # Sprites of two classes closer than this are a recolour or a close relative: their units join
    # one family, so they never sit on both sides of a split.
    related_distance: float = 0.02


PREPARATION = Preparation()

METHOD = f"""\
1. Read `data/core/units/**.cfg` and the sprites `data/core/images/units/**.png` from the package.
2. Every image path a `[unit_type]` names belongs to that unit: its image and animation frames,
   with `[a~b]` ranges and `[x,y]` lists expanded and macros defined in the same file expanded.
   The first unit (in file name order) to name an image keeps it. Images named only inside image
   path functions (`~BLIT(...)`, `~MASK(...)`) or in effect layers (`[missile_frame]`,
   `[halo_frame]`, flames, glows, dust) are not sprites of a unit and are left out.
3. Many frames are named only through the game's global animation macros, which are not read. Such
   a frame goes to the unit owning the image in the same folder whose name is the longest
   `-`-separated prefix of the frame's name (`drakes/burner-fly-2.png` -> `drakes/burner.png`).
   Where a frame is also named explicitly, this rule gives the same unit for over 99% of frames.
4. Frames with fewer than {PREPARATION.min_visible_pixels} visible pixels (shadows, the end of a
   fade-out) are left out.
5. Near-copies: each sprite is composited on white and shrunk to a {PREPARATION.thumbnail_size}x\
{PREPARATION.thumbnail_size} bilinear RGB thumbnail (values in [0, 1]). Going through the classes
   in name order and each class's sprites in name order, a sprite whose thumbnail differs from an
   already kept one (of any class) by less than {PREPARATION.near_copy_distance} (mean absolute
   difference per value) is left out: animation frames a few pixels apart would be trivial
   matches, and copies across classes contradicting labels.
6. Units with fewer than {PREPARATION.min_images} sprites left are left out (and step 5 is redone
   without them). Walking Corpse and Soulless keep all their variations (bat, drake, ...) as one
   class each, as the game does.
7. Families: two units are related when one advances to the other (`advances_to`), one is based
   on the other (`[base_unit]`), both name the same sprite (variations), or a sprite of one is
   within {PREPARATION.related_distance} of a sprite of the other (a recolour). A family is a
   connected component of these relations.
8. Splits: families in the order of the SHA-1 of their names (the first member's class name) go to
   the unseen (test) side while they fit within half of the classes; the others are seen
   (training and validation, where validation classes are also cut at a family boundary). No
   family spans two splits. `data.split_seed` salts the hash to draw other splits the same way.
9. Each kept sprite is saved as an RGB PNG in `images/<class>/`.
"""


def default_root() -> Path:
    """``wesnoth-v<FORMAT_VERSION>`` under ``$GAPAN_DATA_HOME``, else under the cache root.

    The version in the name makes a new format prepare a new folder: an older cache, and the
    features cached from its files, are never read as the new set.
    """
    home = os.environ.get("GAPAN_DATA_HOME")
    return (Path(home).expanduser() if home else cache_root()) / f"wesnoth-v{FORMAT_VERSION}"


def class_folder_name(unit: str) -> str:
    """A unit id as a folder name: ``Drake Arbiter`` -> ``drake_arbiter``."""
    return re.sub(r"[^a-z0-9]+", "_", unit.lower()).strip("_")


def _file_names(paths: list[str]) -> dict[str, str]:
    """Sprite path -> file name in its class folder: the base name, or the path when two collide."""
    base_counts: dict[str, int] = {}
    for path in paths:
        base_counts[posixpath.basename(path)] = base_counts.get(posixpath.basename(path), 0) + 1
    return {
        path: posixpath.basename(path)
        if base_counts[posixpath.basename(path)] == 1
        else path.removeprefix("units/").replace("/", "_")
        for path in paths
    }


def is_prepared(root: Path) -> bool:
    """Whether `root` holds a complete cache (classes.json is the last file written)."""
    return (Path(root) / "classes.json").is_file()


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA")


def visible_pixels(image: Image.Image) -> int:
    """The number of pixels of an RGBA image that are not fully transparent."""
    return image.width * image.height - image.getchannel("A").histogram()[0]


def composite_on_white(image: Image.Image) -> Image.Image:
    """An RGBA image over a white background, as RGB."""
    return Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("RGB")


def _readme(manifest: dict) -> str:
    source, counts = manifest["source"], manifest["counts"]
    side = {name: "unseen" for name in manifest["unseen"]} | {
        name: "seen" for name in manifest["seen"]
    }
    family_rows = "\n".join(
        f"| {family} | {side[members[0]]} | {len(members)} | {', '.join(members)} |"
        for family, members in sorted(manifest["families"].items())
    )
    count_rows = "\n".join(f"| {step} | {number} |" for step, number in counts.items())
    return f"""# Wesnoth unit sprites

Unit sprites of {UPSTREAM}, from the Debian package `{PACKAGE}` version `{source["version"]}`.

Licence: {LICENSE} (the art of The Battle for Wesnoth is distributed under the GNU General Public
License, version 2 or later; see /usr/share/doc/{PACKAGE}/copyright in the package).

{manifest["num_classes"]} classes (unit types) in {len(manifest["families"])} families,
{manifest["num_images"]} images; {len(manifest["seen"])} seen classes (training and validation),
{len(manifest["unseen"])} unseen classes (test). Format version {FORMAT_VERSION}.

## How this folder was made

`python -m gapan.data.wesnoth` (module `gapan.data.wesnoth` of gapan-studies), with the settings
`{json.dumps(manifest["preparation"])}`:

{METHOD}
`classes.json` lists the files of each class, the families and the seen and unseen classes.

## Counts

| step | count |
| --- | --- |
{count_rows}

## Families

| family | side | classes | members |
| --- | --- | --- | --- |
{family_rows}
"""


@dataclass(frozen=True)
class _Sprite:
    unit: str
    path: str
    image: Image.Image  # RGB, composited on white


def _candidate_sprites(
    contents: PackageContents, by_unit: Mapping[str, list[str]], preparation: Preparation
) -> list[_Sprite]:
    """Every visible sprite, by class name then file path."""
    sprites = []
    for unit in sorted(by_unit, key=class_folder_name):
        for path in by_unit[unit]:
            image = _decode(contents.images[path])
            if visible_pixels(image) >= preparation.min_visible_pixels:
                sprites.append(_Sprite(unit, path, composite_on_white(image)))
    return sprites


def _keep_distinct_sprites(
    sprites: list[_Sprite], pairs: list[tuple[int, int, float]], preparation: Preparation
) -> tuple[list[int], dict[str, int]]:
    """The sprites left after near-copy removal and the class-size floor, and what each step took.

    A class that falls below the floor no longer keeps its sprites out of other classes, so the
    removal repeats without it until nothing changes.
    """
    units = sorted({sprite.unit for sprite in sprites})
    while True:
        alive = set(units)
        candidates = [index for index, sprite in enumerate(sprites) if sprite.unit in alive]
        position = {index: number for number, index in enumerate(candidates)}
        local_pairs = [
            (position[i], position[j], distance)
            for i, j, distance in pairs
            if i in position and j in position
        ]
        kept = [
            candidates[number]
            for number in families.drop_near_copies(
                len(candidates), local_pairs, preparation.near_copy_distance
            )
        ]
        sizes: dict[str, int] = {}
        for index in kept:
            sizes[sprites[index].unit] = sizes.get(sprites[index].unit, 0) + 1
        units = sorted(unit for unit in units if sizes.get(unit, 0) >= preparation.min_images)
        if set(units) == alive:
            break
    kept_set = set(kept)
    copy_of: dict[int, list[int]] = {}
    for i, j, distance in pairs:
        if distance < preparation.near_copy_distance and i in kept_set:
            copy_of.setdefault(j, []).append(i)
    removed = [index for index in candidates if index not in kept_set]
    within = sum(
        any(sprites[i].unit == sprites[j].unit for i in copy_of.get(j, ())) for j in removed
    )
    return kept, {
        "near-copies of a sprite of the same class, removed": within,
        "near-copies of a sprite of another class, removed": len(removed) - within,
        "units with too few distinct sprites, left out": len(
            {sprite.unit for sprite in sprites} - alive
        ),
    }


def build_cache(
    contents: PackageContents,
    directory: Path,
    preparation: Preparation = PREPARATION,
    progress: Callable[[str], None] = print,
) -> dict:
    """Write the class folders, classes.json (last) and README.md into `directory`.

    Args:
        contents: The package's unit definitions and sprites.
        directory: An empty folder.
        preparation: The filtering settings.
        progress: Called with a line per step, with its counts.

    Returns:
        The classes.json content.
    """
    by_unit = assign_images(contents.configs, contents.images.keys())
    named = sum(map(len, by_unit.values()))
    progress(f"Wesnoth sprites: {named} named by {len(by_unit)} units")
    sprites = _candidate_sprites(contents, by_unit, preparation)
    progress(f"  {len(sprites)} with at least {preparation.min_visible_pixels} visible pixels")
    if not sprites:
        raise DataError(
            f"the package holds no visible unit sprites; expected the {PACKAGE} package."
        )
    pairs = _near_pairs(sprites, preparation)
    kept, removed = _keep_distinct_sprites(sprites, pairs, preparation)
    for step, number in removed.items():
        progress(f"  {number} {step}")
    units = _class_units(sprites, kept, preparation)
    family_of = _family_of(contents, sprites, pairs, units, preparation)
    seen, unseen = families.split_families(family_of)
    classes = _write_images(directory, sprites, kept, units)
    members: dict[str, list[str]] = {}
    for name in sorted(family_of):
        members.setdefault(family_of[name], []).append(name)
    num_images = sum(map(len, classes.values()))
    counts = {
        "sprites named by a unit": named,
        "units with sprites": len(by_unit),
        f"sprites with at least {preparation.min_visible_pixels} visible pixels": len(sprites),
        **removed,
        "classes kept": len(classes),
        "images kept": num_images,
        "families": len(members),
        "seen classes (training and validation)": len(seen),
        "unseen classes (test)": len(unseen),
    }
    progress(
        f"  kept {num_images} images of {len(classes)} classes in {len(members)} families: "
        f"{len(seen)} seen and {len(unseen)} unseen classes"
    )
    manifest = _manifest(contents, preparation, units, classes, members, counts, seen, unseen)
    (directory / "README.md").write_text(_readme(manifest), encoding="utf-8")
    (directory / "classes.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _near_pairs(sprites: list[_Sprite], preparation: Preparation) -> list[tuple[int, int, float]]:
    """Pairs of sprites close enough to be copies or relatives, with their distance."""
    size = preparation.thumbnail_size
    thumbnails = np.stack([families.thumbnail(sprite.image, size) for sprite in sprites])
    return families.near_pairs(
        thumbnails, max(preparation.near_copy_distance, preparation.related_distance)
    )


def _class_units(
    sprites: list[_Sprite], kept: list[int], preparation: Preparation
) -> dict[str, str]:
    """Class folder name -> unit id of the units with kept sprites.

    Raises:
        DataError: two units would share a folder, or fewer than two units are left.
    """
    units: dict[str, str] = {}
    for unit in sorted({sprites[index].unit for index in kept}):
        if units.setdefault(class_folder_name(unit), unit) != unit:
            raise DataError(
                f"units {units[class_folder_name(unit)]!r} and {unit!r} share the folder name "
                f"{class_folder_name(unit)!r}."
            )
    if len(units) < 2:
        raise DataError(
            f"only {len(units)} units have at least {preparation.min_images} distinct sprites in "
            f"the package; expected the {PACKAGE} package."
        )
    return units


def _family_of(
    contents: PackageContents,
    sprites: list[_Sprite],
    pairs: list[tuple[int, int, float]],
    units: Mapping[str, str],
    preparation: Preparation,
) -> dict[str, str]:
    """Class folder name -> its family: the related classes, by definitions and by recolours."""
    # Removed copies count (a sprite that two classes share is the strongest sign that they are
    # related); sprites of units left out do not, or their odd frames would chain unrelated
    # classes together. Relations that the definitions declare count through any unit.
    recolours = {
        (sprites[i].unit, sprites[j].unit)
        for i, j, distance in pairs
        if distance < preparation.related_distance
        and sprites[i].unit in units.values()
        and sprites[j].unit in units.values()
    }
    relations = unit_relations(contents.configs, contents.images.keys()) | recolours
    # Relations through units that were left out count too: Dark Adept and Necromancer stay one
    # family without Dark Sorcerer between them.
    return families.families(
        units, ((class_folder_name(a), class_folder_name(b)) for a, b in relations)
    )


def _write_images(
    directory: Path, sprites: list[_Sprite], kept: list[int], units: Mapping[str, str]
) -> dict[str, list[str]]:
    """Save each class's kept sprites in ``images/<class>/``; class -> its file names, sorted."""
    classes: dict[str, list[str]] = {}
    for name in sorted(units):
        chosen = [sprites[index] for index in kept if sprites[index].unit == units[name]]
        names = _file_names([sprite.path for sprite in chosen])
        (directory / "images" / name).mkdir(parents=True)
        for sprite in chosen:
            sprite.image.save(directory / "images" / name / names[sprite.path])
        classes[name] = sorted(names.values())
    return classes


def _manifest(
    contents: PackageContents,
    preparation: Preparation,
    units: Mapping[str, str],
    classes: dict[str, list[str]],
    members: dict[str, list[str]],
    counts: dict[str, int],
    seen: list[str],
    unseen: list[str],
) -> dict:
    """The classes.json content."""
    return {
        "format": FORMAT_VERSION,
        "source": {
            "package": PACKAGE,
            "version": contents.version,
            "upstream": UPSTREAM,
            "license": LICENSE,
        },
        "preparation": dataclasses.asdict(preparation),
        "min_images_per_class": preparation.min_images,
        "num_classes": len(classes),
        "num_images": sum(map(len, classes.values())),
        "counts": counts,
        "units": {name: units[name] for name in sorted(units)},
        "families": members,
        "seen": seen,
        "unseen": unseen,
        "classes": classes,
    }


def _remove_abandoned_builds(parent: Path, name: str) -> None:
    """Delete build folders left by a prepare that was killed (its process is gone)."""
    prefix = f".{name}.partial-"
    for folder in parent.glob(prefix + "*"):
        pid = folder.name.removeprefix(prefix).split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, owned by another user
            pass


def prepare(
    root: Path | None = None, deb: Path | None = None, progress: Callable[[str], None] = print
) -> Path:
    """Build the cache at `root` (default: `default_root()`) unless it is already complete.

    The cache is built in a folder beside `root` and renamed into place, so an interrupted
    prepare never leaves a cache that looks complete.

    Args:
        root: The cache folder.
        deb: A downloaded ``wesnoth-1.16-data`` .deb; when None, ``apt-get download`` fetches it.
        progress: Called with a line per step of a build, with its counts.

    Returns:
        The cache folder.

    Raises:
        DataError: when the package cannot be fetched or read, or `root` holds something else.
    """
    root = Path(root).expanduser().absolute() if root is not None else default_root()
    if is_prepared(root):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root} exists but is not a complete Wesnoth cache (no classes.json). "
            "Delete it, or choose another folder with --root (data.root)."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root.parent, root.name)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-{os.getpid()}-", dir=root.parent))
    try:
        progress(f"Preparing the embedded data set in {root} (once)")
        package = Path(deb) if deb is not None else download_package(build)
        contents = read_package(package)
        staging = build / "cache"
        staging.mkdir()
        build_cache(contents, staging, progress=progress)
        if root.is_dir():
            root.rmdir()  # an empty folder (checked above); a rename cannot replace it
        try:
            staging.rename(root)
        except OSError:
            # Another process finished first; its cache is as good as this one.
            if not is_prepared(root):
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return root
