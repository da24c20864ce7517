"""Genotypes shipped with the package (DARTS V2, P-DARTS, the paper's PR-DARTS cells).

Read through ``importlib.resources`` so they work from a wheel as well as from a
checkout, and parsed as ``prnas-genotype/1`` JSON: never eval'd or unpickled.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from prnas.space.genotype import Genotype

_GENOTYPES = resources.files(__package__).joinpath("genotypes")


def list_genotypes() -> list[str]:
    """Names accepted by :func:`load_genotype`, sorted."""
    return sorted(p.name[: -len(".json")] for p in _GENOTYPES.iterdir()
                  if p.name.endswith(".json"))


def load_genotype(name_or_path: str) -> Genotype:
    """A preset by name (``darts-v2``, ``prdarts-dl2``) or a genotype JSON file by path.

    A name wins over a same-named relative path only when no such file exists,
    so a search's ``genotype.json`` is always taken from disk.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return Genotype.load(path)
    name = name_or_path.removesuffix(".json")
    if name in list_genotypes():
        return Genotype.from_dict(json.loads(_GENOTYPES.joinpath(name + ".json").read_text()))
    raise ValueError(
        f"unknown genotype {name_or_path!r}: not a file and not a preset; "
        f"available presets: {', '.join(list_genotypes())}"
    )
