"""The paper's tables from probe folders: Tables 1-2 and Appendices C, D, E, H, mean ± std over seeds.

A table is a title, the names of its label columns and rows; a row is its labels and the probe folders
of its seeds (`physioserve probe` outputs). Every row reports test balanced accuracy per task and the
aggregate score (as Tables 1-2); Appendix H repeats every row with all four metrics per task.
`write_tables` writes RUNS/tables/<table>.md, tables.md (all of them) and tables.json (the numbers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import TASKS
from .evaluate import METRICS, TASK_TITLES, json_safe, evaluate_dir, format_cell, group_runs


@dataclass
class Row:
    labels: tuple[str, ...]  # one per label column
    dirs: list[Path] = field(default_factory=list)  # probe folders, one per seed


@dataclass
class Table:
    key: str  # file name: table1, table2, appendix_c, ...
    title: str
    columns: tuple[str, ...]  # label columns
    rows: list[Row]
    note: str = ""


def summarise_row(row: Row) -> dict:
    """Test metrics of a row's runs: mean ± std over its seeds (they must differ only in their seeds)."""
    runs = [evaluate_dir(d) for d in row.dirs if (Path(d) / "probe.json").exists()]
    if not runs:
        return {"n_runs": 0, "metrics": {}, "aggregate": {"n": 0}, "describe": None, "dirs": []}
    groups = group_runs(runs)
    if len(groups) != 1:
        raise ValueError(f"row {' / '.join(row.labels)}: its runs differ in more than their seeds: "
                         + ", ".join(str(d) for d in row.dirs))
    group = groups[0]
    return {"n_runs": group["n_runs"], "metrics": group["metrics"], "aggregate": group["aggregate"],
            "describe": group["row"], "dirs": group["dirs"]}


def table_markdown(table: Table, summaries: list[dict]) -> str:
    """Tables 1-2 shape: label columns, balanced accuracy per task, aggregate score, runs."""
    head = [*table.columns, *(TASK_TITLES[t] for t in TASKS), "Score", "Runs"]
    lines = [f"### {table.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, s in zip(table.rows, summaries):
        cells = [format_cell(s["metrics"][t]["balanced_accuracy"]) if s["n_runs"] else "–" for t in TASKS]
        score = format_cell(s["aggregate"]) if s["n_runs"] else "–"
        lines.append("| " + " | ".join([*row.labels, *cells, score, str(s["n_runs"])]) + " |")
    lines += ["", "Test balanced accuracy, mean ± std over seeds. Score = mean over tasks of (balanced accuracy − "
              "chance) / chance; chance 0.2, 0.5, 0.5." + (f" {table.note}" if table.note else "")]
    return "\n".join(lines) + "\n"


def all_metrics_markdown(tables: list[Table], summaries: dict[str, list[dict]]) -> str:
    """Appendix H: every row of every table with balanced accuracy, kappa, macro F1 and AUROC per task."""
    head = ["Table", "Row", "Task", "Balanced acc.", "Kappa", "Macro F1", "AUROC", "Runs"]
    lines = ["### Appendix H: all test metrics of every row (mean ± std over seeds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for table in tables:
        for row, s in zip(table.rows, summaries[table.key]):
            if not s["n_runs"]:
                continue
            for task in TASKS:
                cells = [format_cell(s["metrics"][task][k]) for k in METRICS]
                lines.append(f"| {table.key} | {' / '.join(row.labels)} | {TASK_TITLES[task]} | " + " | ".join(cells)
                             + f" | {s['n_runs']} |")
    return "\n".join(lines) + "\n"


def write_tables(tables: list[Table], out: Path, appendix_h: bool = True) -> str:
    """Write every table (Markdown per table, tables.md, tables.json) under `out`; returns tables.md's text."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = {t.key: [summarise_row(r) for r in t.rows] for t in tables}
    parts = []
    for table in tables:
        text = table_markdown(table, summaries[table.key])
        (out / f"{table.key}.md").write_text(text)
        parts.append(text)
    if appendix_h:
        text = all_metrics_markdown(tables, summaries)
        (out / "appendix_h.md").write_text(text)
        parts.append(text)
    data = {t.key: {"title": t.title, "columns": list(t.columns),
                    "rows": [{"labels": list(r.labels), **s} for r, s in zip(t.rows, summaries[t.key])]} for t in tables}
    (out / "tables.json").write_text(json.dumps(json_safe(json.loads(json.dumps(data, default=str))), indent=1))
    combined = "\n".join(parts)
    (out / "tables.md").write_text(combined)
    return combined
