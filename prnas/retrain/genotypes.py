"""Which genotypes a retrain fan-out covers: presets, JSON files, earlier search folders,
random cells from a search space.

Resolved once in the driver into plain values (label, what to load, file path,
kind), so every trial loads exactly what the user named, from an absolute path,
and the result rows carry a label that tells the genotypes apart and a kind
(searched / random / preset) that tells a search from its baseline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from prnas.filenames import GENOTYPE_FILE
from prnas.presets import list_genotypes, load_genotype
from prnas.space.constraints import PRESETS, preset
from prnas.space.genotype import Genotype
from prnas.space.sampling import MAX_CELLS, PAPER_MORPH_ROUNDS, SampleSpec, sample_genotypes
from prnas.storage import Location, as_location, location

KINDS = ("searched", "random", "preset")


@dataclass(frozen=True)
class GenotypeRef:
    """``label``: the ``genotype`` column; ``ref``: a preset name or an absolute JSON path;
    ``kind``: the ``kind`` column (searched, random or preset)."""

    label: str
    ref: str
    path: str | None = None
    kind: str = "searched"
    #: The cell itself (``Genotype.to_dict``), filled in by the driver (:meth:`embedded`):
    #: a trial on another node then needs no file from the driver's disk.
    genotype: dict | None = None

    def load(self) -> Genotype:
        if self.genotype is not None:
            return Genotype.from_dict(self.genotype)
        return load_genotype(self.ref)

    def embedded(self) -> GenotypeRef:
        """This reference carrying its cell, read now on the driver."""
        if self.genotype is not None:
            return self
        return replace(self, genotype=self.load().to_dict())

    def to_dict(self) -> dict:
        d = {"label": self.label, "ref": self.ref, "path": self.path, "kind": self.kind}
        return d if self.genotype is None else {**d, "genotype": self.genotype}

    @staticmethod
    def from_dict(d: dict) -> GenotypeRef:
        kind = d.get("kind") or ("preset" if d.get("path") is None else "searched")
        return GenotypeRef(label=d["label"], ref=d["ref"], path=d.get("path"), kind=kind,
                           genotype=d.get("genotype"))


def parse_genotype_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (the ``--genotype`` flag)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def ref_for(name_or_path: str) -> GenotypeRef:
    """A preset stays a name; a file becomes absolute and is labelled by its genotype's name.

    A file is a searched cell unless it says otherwise (``prnas.space sample``
    writes ``"kind": "random"`` into the cells it draws).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        genotype = load_genotype(str(path))
        resolved = str(path.resolve())
        kind = genotype.extra.get("kind")
        return GenotypeRef(label=genotype.name, ref=resolved, path=resolved,
                           kind=kind if kind in KINDS else "searched")
    load_genotype(name_or_path)  # raises, listing the presets
    name = name_or_path.removesuffix(".json")
    return GenotypeRef(label=name, ref=name, path=None, kind="preset")


def from_search(experiment: str | Path) -> list[GenotypeRef]:
    """Every distinct ``genotype.json`` below an earlier search folder, in path order.

    Labelled by their folder relative to ``experiment`` (search trials share a
    genotype name); a cell found twice (two seeds converging, or a copy in a
    checkpoint folder) is retrained once. A search on an object store (``s3://...``)
    gives its trial folders' genotypes, read here and carried in the references, so
    trials never read the store.
    """
    if "://" in str(experiment):
        root = location(experiment)
        if not root.is_dir():
            raise ValueError(f"--from-search: nothing at {root}")
        found = [(trial.name, trial / GENOTYPE_FILE) for trial in root.children()
                 if (trial / GENOTYPE_FILE).is_file()]
        refs = _distinct(((label, path.uri, Genotype.parse(path.read_text(), path.uri))
                          for label, path in found), embed=True)
        if not refs:
            raise ValueError(f"--from-search: no {GENOTYPE_FILE} in the trial folders of "
                             f"{root}")
        return refs
    local = Path(experiment).expanduser().resolve()
    if not local.is_dir():
        raise ValueError(f"--from-search: {local} is not a directory")
    paths = sorted(local.rglob(GENOTYPE_FILE))
    if not paths:
        raise ValueError(f"--from-search: no {GENOTYPE_FILE} anywhere below {local}")

    def labelled(path: Path, genotype: Genotype) -> tuple[str, str, Genotype]:
        rel = path.parent.relative_to(local).as_posix()
        return (genotype.name if rel == "." else rel), str(path), genotype

    return _distinct(labelled(p, Genotype.load(p)) for p in paths)


def _distinct(found: Iterable[tuple[str, str, Genotype]],
              embed: bool = False) -> list[GenotypeRef]:
    """One searched reference per distinct cell, the first (label, file, genotype) found;
    ``embed``: carrying its cell (a file the trials could not read)."""
    refs, seen = [], set()
    for label, where, genotype in found:
        key = (genotype.normal, genotype.reduce, genotype.normal_concat, genotype.reduce_concat)
        if key not in seen:
            seen.add(key)
            refs.append(GenotypeRef(label=label, ref=where, path=where, kind="searched",
                                    genotype=genotype.to_dict() if embed else None))
    return refs


@dataclass(frozen=True)
class RandomRequest:
    """``--random SPACE:N[:STEPS]``: N random cells of a preset space, STEPS morph rounds."""

    space: str
    count: int
    steps: int = PAPER_MORPH_ROUNDS

    def spec(self) -> SampleSpec:
        return SampleSpec(self.space, preset(self.space), self.steps)


RANDOM_SYNTAX = "SPACE:N[:STEPS] (e.g. DL:5, or DL:3:2 for a schedule with 2 morph rounds)"


def parse_random(text: str) -> list[RandomRequest]:
    """``"DL:5,DR:3:2"`` -> requests; ValueError naming the item and the syntax."""
    out = []
    for item in parse_genotype_list(text):
        parts = item.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            space, count = parts[0].upper(), int(parts[1])
            steps = int(parts[2]) if len(parts) == 3 else PAPER_MORPH_ROUNDS
        except ValueError:
            raise ValueError(f"--random {item!r}: expected {RANDOM_SYNTAX}") from None
        if space not in PRESETS:
            raise ValueError(f"--random {item!r}: unknown space {parts[0]!r}; allowed: "
                             f"{', '.join(PRESETS)}")
        if not 1 <= count <= MAX_CELLS or steps < 0:
            raise ValueError(f"--random {item!r}: N must be >= 1 (at most {MAX_CELLS:,}: "
                             "the cells are held in memory) and STEPS >= 0")
        out.append(RandomRequest(space, count, steps))
    keys = [(r.space, r.steps) for r in out]
    if len(set(keys)) < len(keys):
        raise ValueError("--random: a space and number of morph rounds is named twice "
                         "(the same seed would draw the same cells); ask for more cells instead")
    return out


def random_cells(requests: Sequence[RandomRequest], seed: int = 0) -> list[Genotype]:
    """The cells the requests draw (``prnas.space.sampling``), in request order."""
    return [g for r in requests for g in sample_genotypes(r.spec(), r.count, seed)]


def write_random_cells(genotypes: Sequence[Genotype],
                       folder: str | os.PathLike | Location) -> list[GenotypeRef]:
    """Save each cell as ``folder/<name>.json`` (never over an existing file) and refer to it.
    ``folder`` may be on remote storage (:mod:`prnas.storage`); the references carry
    their cells, so trials never read these files back.

    Cells of requests that differ only in their morph rounds share names; the
    later ones get ``_2``, ``_3`` ... so every cell keeps its own file.
    """
    folder = as_location(folder)
    refs, used = [], set()
    for g in genotypes:
        stem, n = g.name, 1
        while stem in used or (folder / f"{stem}.json").exists():
            n += 1
            stem = f"{g.name}_{n}"
        used.add(stem)
        target = folder / f"{stem}.json"
        target.write_text(g.to_json() + "\n")
        refs.append(GenotypeRef(label=stem, ref=target.uri, path=target.uri, kind="random",
                                genotype=g.to_dict()))
    return refs


def resolve(names: Sequence[str] = (), search_dirs: Sequence[str | Path] = (),
            extra: Sequence[GenotypeRef] = ()) -> list[GenotypeRef]:
    """All requested genotypes (``extra``: already resolved ones, e.g. random cells), with
    labels made unique (``name``, ``name#2``, ...)."""
    refs = [ref_for(n) for n in names]
    for d in search_dirs:
        refs += from_search(d)
    refs += list(extra)
    if not refs:
        raise ValueError("no genotype given: pass --genotype NAME_OR_PATH[,...], "
                         "--from-search DIR and/or --random SPACE:N "
                         f"(presets: {', '.join(list_genotypes())})")
    out, used = [], set()
    for ref in refs:
        if ref.ref in {r.ref for r in out}:
            continue  # named twice
        label, n = ref.label, 1
        while label in used:
            n += 1
            label = f"{ref.label}#{n}"
        used.add(label)
        out.append(replace(ref, label=label))
    return out
