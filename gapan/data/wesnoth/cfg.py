"""The unit definitions of the package: WML ``.cfg`` files read for the sprites each unit names
and for the relations between units (advancements, base units, shared sprites).

Only what a sprite's owner needs is parsed: macros a file defines for itself, ``[unit_type]``
blocks, their ids, ``advances_to`` and ``[base_unit]``, image paths and animation ranges.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Collection, Mapping

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
