"""What a search trial writes beside Tune's own files, and the bookkeeping behind it.

Per cycle: the wall time of the trial step that trained it and the Ray node it ran
on. From those and the engine's cycle records, the trial's ``cycles.jsonl``
(rewritten whole after every cycle from checkpointed state, so it never holds a
cycle that a retry from an older checkpoint threw away) and, at the end,
``genotype.json``. Kept apart so that the Trainable is Tune's contract and nothing
else; its state travels in the trial's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prnas._io import jsonl_text
from prnas.cycle_record import CycleRecord
from prnas.filenames import CYCLES_FILE, SNAPSHOT_PREFIX
from prnas.runtime import checkpoint
from prnas.storage import Location


class TrialFiles:
    """One search trial's own files in its storage folder (a path or an object store)."""

    def __init__(self, folder: Callable[[], Location], columns: dict[str, Any],
                 morphs: Sequence[int]) -> None:
        self._folder = folder  # looked up when writing: a reused actor's reset() sets it anew
        self.columns = columns  # the trial's identity and resources, in every row
        self.morphs = morphs  # per cycle of the schedule
        self.walls: dict[int, tuple[float, float]] = {}  # cycle -> (step s, total s)
        self.nodes: dict[int, str | None] = {}  # cycle -> Ray node id that trained it

    def trained(self, cycle: int, wall_s: float, node: str | None) -> None:
        self.walls[cycle] = (wall_s, wall_s + self.walls.get(cycle - 1, (0.0, 0.0))[1])
        self.nodes[cycle] = node

    def rows(self, records: Iterable[CycleRecord]) -> list[dict[str, Any]]:
        """Every cycle so far, as applied: the record, the decision, the pools after it."""
        rows = []
        for rec in records:
            wall, total = self.walls.get(rec.cycle, (None, None))
            rows.append(rec.with_columns(
                **self.columns, morphs=self.morphs[rec.cycle - 1], wall_time_s=wall,
                wall_time_total_s=total, node_id=self.nodes.get(rec.cycle)).to_json())
        return rows

    def write_cycles(self, records: Iterable[CycleRecord]) -> None:
        self.write(CYCLES_FILE, jsonl_text(self.rows(records)))

    def write(self, name: str, text: str) -> str:
        """Replace a file of the trial folder whole (never visible half-written)."""
        target = self._folder() / name
        target.write_text(text)
        return target.uri

    def snapshot(self, cycle: int, state: dict[str, Any]) -> None:
        """The engine's state after ``cycle``, for members of the population that take it
        over (exploit). The one before stays, as a member may not have read it yet (it
        resumes after this trial may already have trained on); older ones go."""
        folder = self._folder()
        (folder / snapshot_name(cycle)).write_bytes(checkpoint.to_bytes(state))
        kept = sorted(c for c in (_snapshot_cycle(f.name) for f in folder.children())
                      if c is not None and c <= cycle)
        for old in kept[:-2]:
            (folder / snapshot_name(old)).delete()

    def state_dict(self) -> dict[str, Any]:
        return {"walls": self.walls, "nodes": self.nodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.walls = {int(c): tuple(w) for c, w in state["walls"].items()}
        self.nodes = {int(c): n for c, n in state["nodes"].items()}


def snapshot_name(cycle: int) -> str:
    return f"{SNAPSHOT_PREFIX}{cycle}.pt"


def _snapshot_cycle(name: str) -> int | None:
    digits = name.removeprefix(SNAPSHOT_PREFIX).removesuffix(".pt")
    return int(digits) if name.startswith(SNAPSHOT_PREFIX) and digits.isdigit() else None
