"""Per-trial and across-seed tables of a search, and the paper's Table III with retrain results.

Numeric frames are returned (good for CSV and further pandas work); the
``format_*`` functions turn them into the strings a paper table shows
(``mean ± std``), which :func:`to_markdown` renders without extra packages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.discovery import (
    discoverable_ops,
    discovered_ops,
    morph_rounds,
    trial_pool_history,
)
from analysis.loaders import TRIAL_KEY, trial_genotype_path
from prnas.records import COST_COLUMNS
from prnas.retrain.schedule import final_error
from prnas.space.genotype import Genotype

SEARCH_COLUMNS = [
    "experiment", "trial_id", "seed", "space", "cycles", "num_cycles", "finished",
    "train_acc", "valid_acc", "genotype_normal", "genotype_reduce", "genotype_path",
    "ops_discovered", "ops_discoverable", "ops", "morph_rounds", "wall_time_s",
    "cost_hours", "cost_unit",
]


def cell_string(spec) -> str:
    """A cell as one line: ``op@input`` pairs, nodes separated by `` | ``."""
    pairs = [f"{op}@{src}" for op, src in spec]
    return " | ".join(" ".join(pairs[i:i + 2]) for i in range(0, len(pairs), 2))


def _gpus(rows: pd.DataFrame) -> float | None:
    values = pd.to_numeric(rows["gpus_per_trial"], errors="coerce").dropna() \
        if "gpus_per_trial" in rows.columns else pd.Series(dtype=float)
    return float(values.iloc[-1]) if len(values) and values.iloc[-1] > 0 else None


def search_table(results: pd.DataFrame, paper_counting: bool = True) -> pd.DataFrame:
    """One row per trial: final accuracies, genotype, #ops discovered/discoverable, cost.

    ``wall_time_s`` is the trial's last cumulative ``time_total_s``. ``cost_hours``
    is wall time x GPUs per trial in ``GPU-hours`` when ``gpus_per_trial`` (written
    by the trial into each row) says how many it held, else plain wall time in
    ``device-hours`` (one device assumed, which is what a single-GPU Tune trial is).
    """
    records = []
    for (exp, tid), rows in results.groupby(TRIAL_KEY, sort=False):
        rows = rows.sort_values("cycle")
        last = rows.iloc[-1]
        space = str(last["space"])
        steps = morph_rounds(rows)
        found = len(discovered_ops(trial_pool_history(rows), "normal"))
        possible = discoverable_ops(space, steps, paper_counting)
        gpath = trial_genotype_path(rows)
        normal = reduce = None
        if gpath and Path(gpath).is_file():
            g = Genotype.load(gpath)
            normal, reduce = cell_string(g.normal), cell_string(g.reduce)
        wall = float(rows["time_total_s"].max())
        gpus = _gpus(rows)
        num_cycles = last["num_cycles"]
        records.append({
            "experiment": exp, "trial_id": tid, "seed": last["seed"], "space": space,
            "cycles": int(last["cycle"]),
            "num_cycles": num_cycles,
            "finished": bool(pd.notna(num_cycles) and last["cycle"] >= num_cycles),
            "train_acc": float(last["train_acc"]), "valid_acc": float(last["valid_acc"]),
            "genotype_normal": normal, "genotype_reduce": reduce, "genotype_path": gpath,
            "ops_discovered": found, "ops_discoverable": possible,
            "ops": f"{found}/{possible if possible is not None else '?'}",
            "morph_rounds": steps, "wall_time_s": wall,
            "cost_hours": wall / 3600 * (gpus or 1.0),
            "cost_unit": "GPU-hours" if gpus else "device-hours",
        })
    df = pd.DataFrame.from_records(records, columns=SEARCH_COLUMNS)
    return df.astype({"seed": "Int64", "num_cycles": "Int64", "ops_discoverable": "Int64"})


def search_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Across seeds, per space (and cost unit): trials, mean and sample std of each measure."""
    if table.empty:
        return pd.DataFrame()
    out = []
    for (space, unit), g in table.groupby(["space", "cost_unit"], sort=True):
        row = {"space": space, "trials": len(g),
               "seeds": ",".join(str(s) for s in sorted(g["seed"].dropna().unique())),
               "cost_unit": unit,
               "ops_discoverable": g["ops_discoverable"].max()}
        for col in ("valid_acc", "ops_discovered", "wall_time_s", "cost_hours"):
            values = g[col].astype(float)
            row[f"{col}_mean"] = values.mean()
            row[f"{col}_std"] = values.std(ddof=1)  # NaN for one seed
        out.append(row)
    return pd.DataFrame(out)


def pm(mean: float, std: float, digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± std``; ``mean`` alone when std is undefined (a single seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean * scale:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std * scale:.{digits}f}"
    return text


def format_search_table(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "trial": table["experiment"] + "/" + table["trial_id"],
        "seed": table["seed"], "space": table["space"],
        "cycles": [f"{c}/{n}" if pd.notna(n) else str(c)
                   for c, n in zip(table["cycles"], table["num_cycles"])],
        "valid acc %": (table["valid_acc"] * 100).map("{:.2f}".format),
        "#ops": table["ops"],
        "search time [h]": (table["wall_time_s"] / 3600).map("{:.3g}".format),
        "cost": [f"{h:.3g} {u}" for h, u in zip(table["cost_hours"], table["cost_unit"])],
        "normal cell": table["genotype_normal"].fillna("–"),
        "reduction cell": table["genotype_reduce"].fillna("–"),
    })


def format_search_summary(summary: pd.DataFrame) -> pd.DataFrame:
    if summary.empty:
        return summary
    return pd.DataFrame({
        "space": summary["space"], "trials": summary["trials"], "seeds": summary["seeds"],
        "valid acc %": [pm(m, s, 2, 100) for m, s in
                        zip(summary["valid_acc_mean"], summary["valid_acc_std"])],
        "#ops discovered": [pm(m, s, 1) for m, s in
                            zip(summary["ops_discovered_mean"], summary["ops_discovered_std"])],
        "#ops discoverable": summary["ops_discoverable"].astype("string").fillna("?"),
        "search time [h]": [pm(m, s, 3, 1 / 3600) for m, s in
                            zip(summary["wall_time_s_mean"], summary["wall_time_s_std"])],
        "cost": [f"{pm(m, s, 3)} {u}" for m, s, u in
                 zip(summary["cost_hours_mean"], summary["cost_hours_std"],
                     summary["cost_unit"])],
    })


# ----------------------------------------------------------------------------- retrain




def _last_known(g: pd.DataFrame, col: str):
    """The column's last non-null value in a trial (cost is measured after its last epoch)."""
    if col not in g.columns:
        return None
    values = g[col].dropna()
    return values.iloc[-1] if len(values) else None


def retrain_trials(retrain: pd.DataFrame, report_last: int = 5) -> pd.DataFrame:
    """One row per retrain trial: its reported error, the mean test error of its last epochs,
    and its inference cost (MACs, latency at batch 1, throughput at batch 64; NA where the
    run has not finished).

    The paper (IV-C) reports the mean over the last five epochs, averaged over seeds.
    """
    records = []
    for (exp, tid), g in retrain.groupby(TRIAL_KEY, sort=False):
        g = g.sort_values("epoch")
        records.append({
            "experiment": exp, "trial_id": tid, "genotype": g["genotype"].iloc[0],
            "genotype_path": g["genotype_path"].iloc[0], "seed": g["seed"].iloc[0],
            "dataset": g["dataset"].iloc[0] if pd.notna(g["dataset"].iloc[0]) else "?",
            "params": g["params"].iloc[-1], "epochs": int(g["epoch"].max()),
            "final_test_error": final_error(g[["test_error"]].to_dict("records"), report_last),
            **{c: _last_known(g, c) for c in COST_COLUMNS},
        })
    df = pd.DataFrame.from_records(records, columns=[
        "experiment", "trial_id", "genotype", "genotype_path", "seed", "dataset", "params",
        "epochs", "final_test_error", *COST_COLUMNS])
    return df.astype({"macs": "Int64", "latency_ms_b1": "float64", "throughput_b64": "float64",
                      "cost_device": "string", "cost_threads": "Int64"})


def headline_text(epochs: pd.Series, report_last: int) -> str:
    """How the reported error was read from runs of ``epochs`` epochs each, with the runs
    too short to average.

    A run of at most ``report_last`` epochs reports its last epoch alone
    (prnas.retrain.schedule.final_error); the page says how many did.
    """
    rule = "the last epoch" if report_last == 1 else f"the mean of the last {report_last} epochs"
    short = int((epochs <= report_last).sum()) if report_last > 1 else 0
    if short:
        rule += (f"; {short} of {len(epochs)} run(s) had at most {report_last} epochs and "
                 "report their last epoch alone (too short for the averaged protocol)")
    return rule


def _match_search(label: str, path, search: pd.DataFrame | None) -> pd.Series | None:
    """The search trial a retrained genotype came from: same file, else the label names it."""
    if search is None or search.empty:
        return None
    if isinstance(path, str) and path:
        resolved = str(Path(path).resolve())
        same = search[[isinstance(p, str) and str(Path(p).resolve()) == resolved
                       for p in search["genotype_path"]]]
        if len(same):
            return same.iloc[0]
    named = search[[str(t) == label or str(t) in label.split("/") or
                    f"{e}/{t}" == label for e, t in zip(search["experiment"], search["trial_id"])]]
    return named.iloc[0] if len(named) else None


def table_iii(retrain: pd.DataFrame, search: pd.DataFrame | None = None,
              report_last: int = 5) -> pd.DataFrame:
    """Per retrained genotype and dataset: params, MACs, error mean/std over seeds, inference
    latency and throughput (median over seeds; ``cost_device`` where measured), search cost,
    #ops.

    The search columns are filled for genotypes whose ``genotype_path`` is a
    trial's ``genotype.json`` (or whose label names the trial); presets such as
    darts-v2 have none. Search cost is in days of the search table's cost unit.
    """
    trials = retrain_trials(retrain, report_last)
    records = []
    for (label, dataset), g in trials.groupby(["genotype", "dataset"], sort=False):
        match = _match_search(str(label), g["genotype_path"].iloc[0], search)
        records.append({
            "genotype": label, "dataset": dataset, "seeds": g["seed"].nunique(),
            "params": g["params"].iloc[0],
            "macs": g["macs"].dropna().iloc[0] if g["macs"].notna().any() else None,
            "epochs": int(g["epochs"].min()),
            "error_mean": g["final_test_error"].mean(),
            "error_std": g["final_test_error"].std(ddof=1),
            "latency_ms_b1": g["latency_ms_b1"].median(),
            "throughput_b64": g["throughput_b64"].median(),
            "cost_device": "; ".join(sorted(set(g["cost_device"].dropna()))) or None,
            "search_trial": None if match is None else f"{match['experiment']}/{match['trial_id']}",
            "space": None if match is None else match["space"],
            "search_cost_days": None if match is None else match["cost_hours"] / 24,
            "search_cost_unit": None if match is None else
            match["cost_unit"].replace("hours", "days"),
            "ops_discovered": None if match is None else match["ops_discovered"],
            "ops_discoverable": None if match is None else match["ops_discoverable"],
        })
    return pd.DataFrame.from_records(records, columns=[
        "genotype", "dataset", "seeds", "params", "macs", "epochs", "error_mean", "error_std",
        "latency_ms_b1", "throughput_b64", "cost_device", "search_trial", "space",
        "search_cost_days", "search_cost_unit", "ops_discovered", "ops_discoverable"])


def params_str(params) -> str:
    """3.2M as the paper writes it; small demo networks in thousands instead of 0.00M."""
    if params is None or pd.isna(params):
        return "–"
    return f"{params / 1e6:.2f}M" if params >= 1e5 else f"{params / 1e3:.1f}k"


def macs_str(macs) -> str:
    """Multiply-adds as papers write them (528M); small demo networks with two decimals."""
    if macs is None or pd.isna(macs):
        return "–"
    return f"{macs / 1e6:.0f}M" if macs >= 1e7 else f"{macs / 1e6:.2f}M"


def _num(value, fmt: str) -> str:
    return "–" if value is None or pd.isna(value) else fmt.format(value)


def cost_note(table: pd.DataFrame) -> str:
    """The caption line that says how the cost columns of a Table III were obtained."""
    devices = sorted({d for v in table.get("cost_device", pd.Series(dtype=object)).dropna()
                      for d in str(v).split("; ")})
    where = f" on {', '.join(devices)}" if devices else " (not measured in these runs)"
    return ("MACs: multiply-accumulates of one image at the dataset's input size, convolutions "
            "and linear layers, counted by torch.utils.flop_counter (MACs = FLOPs / 2). "
            "Latency: median batch-1 forward time; throughput: images/s at batch 64; measured "
            f"after each run's last epoch{where}, median over seeds.")


def _dataset_title(name: str) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(str(name).lower(), str(name))


def format_table_iii(table: pd.DataFrame) -> pd.DataFrame:
    """Paper layout: Method, #params, MACs, one test-error column per dataset, then the
    inference latency (batch 1) and throughput (batch 64) of the first dataset's trials,
    search cost, #ops."""
    if table.empty:
        return pd.DataFrame(columns=["Method", "#params", "MACs"])
    datasets = list(dict.fromkeys(table["dataset"]))
    rows = []
    for label, g in table.groupby("genotype", sort=False):
        first = g.iloc[0]
        params = first["params"]
        row = {"Method": label, "#params": params_str(params), "MACs": macs_str(first["macs"])}
        for ds in datasets:
            hit = g[g["dataset"] == ds]
            row[f"{_dataset_title(ds)} test error [%]"] = (
                pm(hit["error_mean"].iloc[0], hit["error_std"].iloc[0]) if len(hit) else "–")
        row["Latency b1 [ms]"] = _num(first["latency_ms_b1"], "{:.2f}")
        row["Throughput b64 [img/s]"] = _num(first["throughput_b64"], "{:.0f}")
        cost = first["search_cost_days"]
        row["Search cost"] = "–" if cost is None or pd.isna(cost) else \
            f"{cost:.3g} {first['search_cost_unit']}"
        found, possible = first["ops_discovered"], first["ops_discoverable"]
        row["#ops"] = "–" if found is None or pd.isna(found) else \
            f"{int(found)}/{'?' if possible is None or pd.isna(possible) else int(possible)}"
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- rendering


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pandas' own needs the optional ``tabulate``)."""
    def cell(v) -> str:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return ""
        if isinstance(v, float | np.floating) and math.isfinite(v):
            # 4.591111111111111 -> 4.591, 55274.0 -> 55274: what a reader compares
            if float(v).is_integer():
                return f"{v:.0f}"
            return f"{v:.1f}" if abs(v) >= 1000 else f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
