"""Which genotypes a retrain fan-out covers: presets, JSON files, earlier search folders.

Resolved once in the driver into plain values (label, what to load, file path),
so every trial loads exactly what the user named, from an absolute path, and
the result rows carry a label that tells the genotypes apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prnas.presets import list_genotypes, load_genotype
from prnas.space.genotype import Genotype

SEARCH_RESULT = "genotype.json"


@dataclass(frozen=True)
class GenotypeRef:
    """``label``: the ``genotype`` column; ``ref``: a preset name or an absolute JSON path."""

    label: str
    ref: str
    path: str | None = None

    def load(self) -> Genotype:
        return load_genotype(self.ref)

    def to_dict(self) -> dict[str, str | None]:
        return {"label": self.label, "ref": self.ref, "path": self.path}

    @staticmethod
    def from_dict(d: dict) -> GenotypeRef:
        return GenotypeRef(label=d["label"], ref=d["ref"], path=d.get("path"))


def parse_genotype_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (the ``--genotype`` flag)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def ref_for(name_or_path: str) -> GenotypeRef:
    """A preset stays a name; a file becomes absolute and is labelled by its genotype's name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        genotype = load_genotype(str(path))
        resolved = str(path.resolve())
        return GenotypeRef(label=genotype.name, ref=resolved, path=resolved)
    load_genotype(name_or_path)  # raises, listing the presets
    name = name_or_path.removesuffix(".json")
    return GenotypeRef(label=name, ref=name, path=None)


def from_search(experiment: str | Path) -> list[GenotypeRef]:
    """Every distinct ``genotype.json`` below an earlier search folder, in path order.

    Labelled by their folder relative to ``experiment`` (search trials share a
    genotype name); a cell found twice (two seeds converging, or a copy in a
    checkpoint folder) is retrained once.
    """
    root = Path(experiment).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"--from-search: {root} is not a directory")
    found = sorted(root.rglob(SEARCH_RESULT))
    if not found:
        raise ValueError(f"--from-search: no {SEARCH_RESULT} anywhere below {root}")
    refs, seen = [], set()
    for path in found:
        genotype = Genotype.load(path)
        key = (genotype.normal, genotype.reduce, genotype.normal_concat, genotype.reduce_concat)
        if key in seen:
            continue
        seen.add(key)
        rel = path.parent.relative_to(root).as_posix()
        label = genotype.name if rel == "." else rel
        refs.append(GenotypeRef(label=label, ref=str(path), path=str(path)))
    return refs


def resolve(names: Sequence[str] = (), search_dirs: Sequence[str | Path] = ()) -> list[GenotypeRef]:
    """All requested genotypes, with labels made unique (``name``, ``name#2``, ...)."""
    refs = [ref_for(n) for n in names]
    for d in search_dirs:
        refs += from_search(d)
    if not refs:
        raise ValueError("no genotype given: pass --genotype NAME_OR_PATH[,...] and/or "
                         f"--from-search DIR (presets: {', '.join(list_genotypes())})")
    out, used = [], set()
    for ref in refs:
        if ref.ref in {r.ref for r in out}:
            continue  # named twice
        label, n = ref.label, 1
        while label in used:
            n += 1
            label = f"{ref.label}#{n}"
        used.add(label)
        out.append(GenotypeRef(label=label, ref=ref.ref, path=ref.path))
    return out
