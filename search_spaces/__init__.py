"""The studies' search spaces: one plain-data file per study, shipped with the package.

`gapan.space.load_space` reads a file by its study name through `importlib.resources`; the files
are parsed, never imported or executed. The format is in `gapan/space.py`.
"""
