"""The searched cell as a value: ``prnas-genotype/1`` JSON, loadable without eval or pickle.

Each cell lists two (op, input) pairs per intermediate node, in node order;
input 0 and 1 are the two cell inputs, input j >= 2 is node j - 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from prnas.space.ops import Op

FORMAT = "prnas-genotype/1"
CellSpec = tuple[tuple[Op, int], ...]


@dataclass(frozen=True)
class Genotype:
    normal: CellSpec
    reduce: CellSpec
    normal_concat: tuple[int, ...] = (2, 3, 4, 5)
    reduce_concat: tuple[int, ...] = (2, 3, 4, 5)
    name: str = "unnamed"
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for cell in ("normal", "reduce"):
            spec = getattr(self, cell)
            if not spec:
                raise ValueError(f"genotype {cell}: the cell has no nodes")
            if len(spec) % 2:
                raise ValueError(f"genotype {cell}: need two (op, input) pairs per node")
            for i, (op, src) in enumerate(spec):
                if not isinstance(op, Op):
                    raise ValueError(f"genotype {cell}[{i}]: {op!r} is not an Op")
                node = i // 2
                if isinstance(src, bool) or not isinstance(src, int):
                    raise ValueError(f"genotype {cell}[{i}]: input {src!r} is not an integer")
                if not 0 <= src < node + 2:
                    raise ValueError(
                        f"genotype {cell}[{i}]: input {src} is not before node {node + 2}"
                    )
            concat = getattr(self, cell + "_concat")
            top = len(spec) // 2 + 2
            if not concat:
                raise ValueError(f"genotype {cell}_concat is empty")
            for c in concat:
                if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < top:
                    raise ValueError(f"genotype {cell}_concat: {c!r} is not a node index "
                                     f"in 0..{top - 1}")
            if len(set(concat)) != len(concat):
                raise ValueError(f"genotype {cell}_concat lists a node twice: {list(concat)}")

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def to_dict(self) -> dict:
        d: dict = {"format": FORMAT, "name": self.name}
        if self.source:
            d["source"] = self.source
        for cell in ("normal", "reduce"):
            d[cell] = [[str(op), src] for op, src in getattr(self, cell)]
            d[cell + "_concat"] = list(getattr(self, cell + "_concat"))
        d.update(self.extra)
        return d

    @staticmethod
    def from_dict(d: dict) -> Genotype:
        if not isinstance(d, dict):
            raise ValueError(f"a {FORMAT} genotype is a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} genotype (format field is {d.get('format')!r})")
        cells = {}
        for cell in ("normal", "reduce"):
            try:
                pairs = d[cell]
                if not isinstance(pairs, list):
                    raise TypeError(f"expected a list of [op, input] pairs, got {pairs!r}")
                cells[cell] = tuple((Op.parse(op), src) for op, src in pairs)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"genotype field {cell!r} missing or malformed: {err}") from None
        for key in ("normal_concat", "reduce_concat"):
            if key in d and not isinstance(d[key], list):
                raise ValueError(f"genotype field {key!r} must be a list of node indices")
        known = {"format", "name", "source", "normal", "reduce", "normal_concat", "reduce_concat"}
        return Genotype(
            normal=cells["normal"],
            reduce=cells["reduce"],
            normal_concat=tuple(d.get("normal_concat", range(2, 2 + len(cells["normal"]) // 2))),
            reduce_concat=tuple(d.get("reduce_concat", range(2, 2 + len(cells["reduce"]) // 2))),
            name=str(d.get("name", "unnamed")),
            source=str(d.get("source", "")),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @staticmethod
    def load(path: str | os.PathLike) -> Genotype:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read ({err})") from None
        return Genotype.parse(text, str(path))

    @staticmethod
    def parse(text: str, where: str) -> Genotype:
        """A genotype from its JSON text; ValueError names ``where`` it came from."""
        try:
            return Genotype.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def save(self, path: str | os.PathLike) -> None:
        from prnas._io import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")
