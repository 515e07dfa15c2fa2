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

Run ``python -m gapan.data.wesnoth [--root DIR] [--deb FILE]`` to prepare the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gapan.data import families
from gapan.data.benchmarks import Source, data_root
from gapan.data.imageset import DataError, make_imageset
from gapan.files import cache_root

PACKAGE = "wesnoth-1.16-data"
UPSTREAM = "The Battle for Wesnoth 1.16 (https://www.wesnoth.org)"
LICENSE = "GPL-2+"
# Where the unit definitions and sprites sit inside the package.
CORE = "usr/share/games/wesnoth/1.16/data/core/"
UNIT_CONFIGS = CORE + "units/"
UNIT_IMAGES = CORE + "images/"  # image paths in the .cfg files are relative to this folder
RECALL_KS = (1, 2, 4, 8)
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

_DEFINE = re.compile(r"^[ \t]*#define[ \t]+(\w+)([^\n]*)\n(.*?)#enddef", re.DOTALL | re.MULTILINE)
_COMMENT = re.compile(r"^[ \t]*#.*$", re.MULTILINE)
_CALL = re.compile(r"\{(\w+)([^{}]*)\}")
_ARGUMENT = re.compile(r'"[^"]*"|\([^()]*\)|\S+')
_UNIT = re.compile(
    r"^[ \t]*\[unit_type\][ \t]*$(.*?)^[ \t]*\[/unit_type\]", re.DOTALL | re.MULTILINE
)
# A value may be followed by a comment (`id=Giant Stoat # wmllint: noconvert`).
_UNIT_ID = re.compile(r"^[ \t]*id[ \t]*=[ \t]*\"?([^\"\n#]+?)\"?[ \t]*(?:#.*)?$", re.MULTILINE)
_ADVANCES_TO = re.compile(r"^[ \t]*advances_to[ \t]*=[ \t]*\"?([^\"\n#]*)", re.MULTILINE)
_BASE_UNIT = re.compile(
    r"^[ \t]*\[base_unit\][ \t]*$(.*?)^[ \t]*\[/base_unit\]", re.DOTALL | re.MULTILINE
)
# An image path under units/, up to .png: anything after it (":100" timings, "~RC(...)" image
# functions, ",next/frame.png") is not part of the file name.
_IMAGE_PATH = re.compile(r"(?<![\w/.-])units/(?:[\w+./-]|\[[^\]\n]*\])+?\.png")
_BRACKETS = re.compile(r"\[([^\]]*)\]")
# Animation layers that draw effects beside the unit (projectiles, halos, flames, dust...);
# layers that draw the unit's own body ([frame], [body_frame], [wyvern_frame], ...) are kept.
_EFFECT_LAYER = re.compile(
    r"^[ \t]*\[(\w*(?:missile|halo|flame|glow|dust|frost|ripples|impact|stone|sword|sound)"
    r"\w*_frame)\](.*?)^[ \t]*\[/\1\]",
    re.DOTALL | re.MULTILINE,
)
_IMAGE_FUNCTION = re.compile(r"~[A-Z_]+\(")


def default_root() -> Path:
    """``wesnoth-v<FORMAT_VERSION>`` under ``$GAPAN_DATA_HOME``, else under the cache root.

    The version in the name makes a new format prepare a new folder: an older cache, and the
    features cached from its files, are never read as the new set.
    """
    home = os.environ.get("GAPAN_DATA_HOME")
    return (Path(home).expanduser() if home else cache_root()) / f"wesnoth-v{FORMAT_VERSION}"


# ----------------------------------------------------------------------------- unit definitions


def expand_macros(text: str) -> str:
    """Drop comments and expand the macros a .cfg file defines for itself.

    Calls to macros defined elsewhere (the game's global macros) are left as they are; image paths
    passed to them as arguments stay visible.
    """
    macros = {match[1]: (match[2].split(), match[3]) for match in _DEFINE.finditer(text)}
    text = _COMMENT.sub("", _DEFINE.sub("", text))

    def expand(call: re.Match[str]) -> str:
        if call[1] not in macros:
            return call[0]
        parameters, body = macros[call[1]]
        arguments = [value.strip('"()') for value in _ARGUMENT.findall(call[2])]
        if len(arguments) != len(parameters):
            return call[0]
        for parameter, argument in zip(parameters, arguments, strict=True):
            body = body.replace("{" + parameter + "}", argument)
        return body

    # Innermost calls first, so nested local macros expand too; a few rounds reach a fixed point.
    for _ in range(10):
        expanded = _CALL.sub(expand, text)
        if expanded == text:
            break
        text = expanded
    return text


def _bracket_choices(group: str) -> list[str]:
    choices = []
    for item in group.split(","):
        first, tilde, last = item.partition("~")
        if tilde and first.isdigit() and last.isdigit():
            start, stop = int(first), int(last)
            step = 1 if stop >= start else -1
            width = len(first) if first.startswith("0") else 0
            choices += [str(number).zfill(width) for number in range(start, stop + step, step)]
        else:
            choices.append(item)
    return choices


def expand_brackets(path: str) -> list[str]:
    """The file names an animation path stands for: ``a-[1~3].png`` and ``a-[n,s].png`` lists.

    >>> expand_brackets("units/a-[1~3].png")
    ['units/a-1.png', 'units/a-2.png', 'units/a-3.png']
    >>> expand_brackets("units/a-[n,s]-[1~2].png")
    ['units/a-n-1.png', 'units/a-n-2.png', 'units/a-s-1.png', 'units/a-s-2.png']
    """
    groups = _BRACKETS.findall(path)
    if not groups:
        return [path]
    template = _BRACKETS.sub("{}", path.replace("{", "{{").replace("}", "}}"))
    # The game expands several groups in step; the product is a superset, and only names of
    # existing files are kept afterwards.
    return [
        template.format(*choice) for choice in itertools.product(*map(_bracket_choices, groups))
    ]


def strip_image_functions(text: str) -> str:
    """Remove image path functions such as ``~RC(...)`` and ``~BLIT(other.png,0,0)``.

    The images they name are masks and overlays, not sprites of the unit.

    >>> strip_image_functions('image="units/a.png~BLIT(units/b.png~FL(),1,2):100"')
    'image="units/a.png:100"'
    """
    pieces, position = [], 0
    while (call := _IMAGE_FUNCTION.search(text, position)) is not None:
        pieces.append(text[position : call.start()])
        depth, end = 1, call.end()
        while end < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        position = end
    return "".join(pieces) + text[position:]


def _image_paths(text: str) -> list[str]:
    paths = []
    for reference in _IMAGE_PATH.findall(text):
        paths += [path for path in expand_brackets(reference) if "{" not in path]
    return paths


def unit_image_references(config_text: str) -> tuple[list[tuple[str, list[str]]], set[str]]:
    """The image paths a .cfg file names.

    Returns:
        Each ``[unit_type]`` with the sprite paths it names, in file order; and the paths named in
        effect layers (projectiles, halos, flames), which are not sprites of any unit.
    """
    text = strip_image_functions(expand_macros(config_text))
    effects = {path for layer in _EFFECT_LAYER.finditer(text) for path in _image_paths(layer[2])}
    text = _EFFECT_LAYER.sub("", text)
    units = []
    for block in _UNIT.finditer(text):
        unit_id = _UNIT_ID.search(block[1])
        if unit_id is not None:
            units.append((unit_id[1].strip(), _image_paths(block[1])))
    return units, effects


def assign_images(configs: Mapping[str, str], image_paths: Collection[str]) -> dict[str, list[str]]:
    """Map each unit to the sprites that belong to it.

    Args:
        configs: Unit .cfg file name -> text; read in sorted name order (the first unit to name an
            image keeps it).
        image_paths: The existing sprites as the .cfg files name them (``units/drakes/x.png``).

    Returns:
        Unit id -> its sprite paths, sorted; units without sprites are absent.
    """
    existing = set(image_paths)
    owner: dict[str, str] = {}
    effects: set[str] = set()
    for name in sorted(configs):
        units, effect_paths = unit_image_references(configs[name])
        effects |= effect_paths
        for unit, paths in units:
            for path in paths:
                if path in existing:
                    owner.setdefault(path, unit)
    existing -= effects
    owner = {path: unit for path, unit in owner.items() if path not in effects}
    # Frames named only through global macros: the owner of the longest name prefix in the folder.
    owner_by_stem = {posixpath.splitext(path)[0]: unit for path, unit in owner.items()}
    for path in sorted(existing - owner.keys()):
        stem = posixpath.splitext(path)[0]
        folder, base = posixpath.split(stem)
        parts = base.split("-")
        for length in range(len(parts) - 1, 0, -1):
            unit = owner_by_stem.get(posixpath.join(folder, "-".join(parts[:length])))
            if unit is not None:
                owner[path] = unit
                break
    images: dict[str, list[str]] = {}
    for path, unit in owner.items():
        images.setdefault(unit, []).append(path)
    return {unit: sorted(paths) for unit, paths in images.items()}


def unit_relations(
    configs: Mapping[str, str], image_paths: Collection[str]
) -> set[tuple[str, str]]:
    """Pairs of related units, as the unit definitions declare them.

    Two units are related when one advances to the other (``advances_to``), one is based on the
    other (``[base_unit]``), or both name the same existing sprite (a variation drawn with another
    unit's frames).

    Returns:
        ``(unit, unit)`` pairs of unit ids; ids that no definition has are kept (harmless).
    """
    existing = set(image_paths)
    relations: set[tuple[str, str]] = set()
    namers: dict[str, set[str]] = {}
    for name in sorted(configs):
        units, _ = unit_image_references(configs[name])
        for unit, paths in units:
            for path in paths:
                if path in existing:
                    namers.setdefault(path, set()).add(unit)
        for block in _UNIT.finditer(strip_image_functions(expand_macros(configs[name]))):
            unit_id = _UNIT_ID.search(block[1])
            if unit_id is None:
                continue
            unit = unit_id[1].strip()
            for value in _ADVANCES_TO.findall(block[1]):
                relations |= {(unit, other.strip()) for other in value.split(",")}
            for base in _BASE_UNIT.finditer(block[1]):
                base_id = _UNIT_ID.search(base[1])
                if base_id is not None:
                    relations.add((unit, base_id[1].strip()))
    for units in namers.values():
        first, *others = sorted(units)
        relations |= {(first, other) for other in others}
    return {(a, b) for a, b in relations if b and b != "null" and a != b}


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


# ----------------------------------------------------------------------------- Debian package


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


# ----------------------------------------------------------------------------- the prepared cache


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
    size = preparation.thumbnail_size
    thumbnails = np.stack([families.thumbnail(sprite.image, size) for sprite in sprites])
    pairs = families.near_pairs(
        thumbnails, max(preparation.near_copy_distance, preparation.related_distance)
    )
    kept, removed = _keep_distinct_sprites(sprites, pairs, preparation)
    for step, number in removed.items():
        progress(f"  {number} {step}")

    units: dict[str, str] = {}  # class folder name -> unit id
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
    family_of = families.families(
        units, ((class_folder_name(a), class_folder_name(b)) for a, b in relations)
    )
    seen, unseen = families.split_families(family_of)

    classes: dict[str, list[str]] = {}
    for name in sorted(units):
        chosen = [sprites[index] for index in kept if sprites[index].unit == units[name]]
        names = _file_names([sprite.path for sprite in chosen])
        (directory / "images" / name).mkdir(parents=True)
        for sprite in chosen:
            sprite.image.save(directory / "images" / name / names[sprite.path])
        classes[name] = sorted(names.values())
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
    manifest = {
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
        "num_images": num_images,
        "counts": counts,
        "units": {name: units[name] for name in sorted(units)},
        "families": members,
        "seen": seen,
        "unseen": unseen,
        "classes": classes,
    }
    (directory / "README.md").write_text(_readme(manifest), encoding="utf-8")
    (directory / "classes.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


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
    parser = argparse.ArgumentParser(description="Prepare the Wesnoth unit sprite data set.")
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


if __name__ == "__main__":
    main()
