"""The study report: `report.md` and a self-contained `report.html` (plots inlined as base64).

Both are rendered from one structure (`Report`), so they always say the same thing. The findings
are sentences computed from the numbers (`findings()`), including where the layer-aware merge
does not beat a baseline.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = (
    ("model", "model"),
    ("general_bpb", "general bpb"),
    ("finance_bpb", "finance bpb"),
    ("general_retention", "general retention"),
    ("gain_kept", "domain gain kept"),
    ("forgetting_recovered", "forgetting recovered"),
    ("general_mc", "general MC acc"),
    ("finance_mc", "finance MC acc"),
)


@dataclass
class Report:
    title: str
    summary: list[str]
    rows: list[dict]
    findings: list[str]
    ranking_table: list[dict] = field(default_factory=list)  # {signal, rho, note}
    stage_costs: list[dict] = field(default_factory=list)  # {stage, seconds, cached}
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name in run dir)
    table_notes: list[str] = field(default_factory=list)  # printed under the table
    versions: dict = field(default_factory=dict)
    config_yaml: str = ""


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%"


def interval(
    rec: dict | None, *, percent: bool = False, digits: int = 4, sign: bool = False
) -> str:
    """`value [lo, hi]` of an interval record (spear_mm.eval.stats.Interval.record)."""
    if not rec or rec.get("value") is None:
        return "n/a"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    d = 1 if percent else digits
    f = f"{{:{'+' if sign else ''}.{d}f}}"

    def num(x: float) -> str:
        return f.format(round(scale * x, d) + 0.0)  # + 0.0: no "-0.0"

    text = num(rec["value"]) + unit
    if rec.get("lo") is None or rec.get("hi") is None:
        return text + " [no interval]"
    return f"{text} [{num(rec['lo'])}, {num(rec['hi'])}]"


def ratio_text(entry: dict | None, *, digits: int = 4) -> str:
    """A ratio record (stats.ratio): the percentage with its interval, or why it is not stated."""
    if not entry:
        return "n/a"
    if entry.get("measurable"):
        return interval(entry["interval"], percent=True)
    den = interval(entry.get("denominator"), digits=digits, sign=True)
    if entry.get("reason", "").startswith("the adapted model moved the other way"):
        return f"undefined: the adapted model moved the other way ({den})"
    return f"not measurable at this probe size (denominator {den})"


RATIOS = ("gain_kept", "forgetting_recovered")


def ratio_notes(adapted: dict | None) -> list[str]:
    """Footnotes for the ratio columns: why a column is n.m. (not measurable) or undefined."""
    notes = []
    for key, what in (
        ("gain_kept", "domain gain kept"),
        ("forgetting_recovered", "forgetting recovered"),
    ):
        ci = ((adapted or {}).get("ci") or {}).get(key)
        if ci and not ci.get("measurable"):
            notes.append(
                f"\\* {what}: {ratio_text(ci)} — the adapted − base difference it divides by."
            )
    return notes


def _cell(key: str, row: dict) -> str:
    ci = (row.get("ci") or {}).get(key, "missing")
    if key in RATIOS and ci != "missing":
        if ci and not ci.get("measurable"):
            return "undefined*" if ci.get("reason", "").startswith("the adapted") else "n.m.*"
        return ratio_text(ci)
    if key in ("general_retention", "general_mc", "finance_mc"):
        return interval(ci, percent=True) if ci != "missing" else pct(row.get(key))
    if ci != "missing" and ci is not None:
        return interval(ci)
    value = row.get(key)
    return fmt(value, 4) if isinstance(value, float) else fmt(value)


TABLE_NOTE = (
    "Test-role documents only (none of them chose anything); every number is followed by its "
    "95% paired bootstrap interval over documents (questions for MC). A ratio whose "
    "denominator's interval contains 0 is not stated (docs/metrics.md)."
)


def _rho(r: dict) -> str:
    return interval(r["interval"], digits=2) if r.get("interval") else fmt(r.get("rho"))


def to_markdown(rep: Report) -> str:
    lines = [f"# {rep.title}", ""]
    lines += [f"- {s}" for s in rep.summary] + [""]
    lines += ["## Findings", ""] + [f"- {s}" for s in rep.findings] + [""]
    lines += ["## Models on the same axes", "", TABLE_NOTE, ""]
    lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for row in rep.rows:
        lines.append("| " + " | ".join(_cell(k, row) for k, _ in COLUMNS) + " |")
    lines.append("")
    lines += [f"{n}" for n in rep.table_notes] + ([""] if rep.table_notes else [])
    for caption, name in rep.plots:
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    if rep.ranking_table:
        lines += ["## Analyzer: rank correlation with the per-layer ablation", ""]
        lines += ["| layer score | Spearman ρ vs ablation general harm | note |", "|---|---|---|"]
        lines += [f"| {r['signal']} | {_rho(r)} | {r.get('note', '')} |" for r in rep.ranking_table]
        lines.append("")
    lines += ["## Cost of each stage", "", "| stage | seconds | this run |", "|---|---|---|"]
    for c in rep.stage_costs:
        lines.append(
            f"| {c['stage']} | {c['seconds']:.0f} | {'cached' if c['cached'] else 'ran'} |"
        )
    lines += ["", "## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in rep.versions.items()]
    lines += ["", "## Resolved config", "", "```yaml", rep.config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def _img(run_dir: Path, name: str) -> str:
    path = run_dir / name
    if not path.is_file():
        return f"<p><em>{html.escape(name)} missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def to_html(rep: Report, run_dir: Path) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(rep.title)}</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}",
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "pre{background:#f5f5f5;padding:1em;overflow:auto}",
        "</style></head><body>",
        f"<h1>{esc(rep.title)}</h1><ul>",
    ]
    parts += [f"<li>{esc(s)}</li>" for s in rep.summary] + ["</ul><h2>Findings</h2><ul>"]
    parts += [f"<li>{esc(s)}</li>" for s in rep.findings] + ["</ul>"]
    parts.append(f"<h2>Models on the same axes</h2><p>{esc(TABLE_NOTE)}</p><table><tr>")
    parts += [f"<th>{esc(h)}</th>" for _, h in COLUMNS] + ["</tr>"]
    for row in rep.rows:
        parts.append(
            "<tr>" + "".join(f"<td>{esc(_cell(k, row))}</td>" for k, _ in COLUMNS) + "</tr>"
        )
    parts.append("</table>")
    parts += [f"<p>{esc(n)}</p>" for n in rep.table_notes]
    for caption, name in rep.plots:
        parts.append(f"<h3>{esc(caption)}</h3>{_img(run_dir, name)}")
    if rep.ranking_table:
        parts.append("<h2>Analyzer: rank correlation with the per-layer ablation</h2><table>")
        parts.append("<tr><th>layer score</th><th>Spearman ρ</th><th>note</th></tr>")
        parts += [
            f"<tr><td>{esc(r['signal'])}</td><td>{esc(_rho(r))}</td>"
            f"<td>{esc(r.get('note', ''))}</td></tr>"
            for r in rep.ranking_table
        ]
        parts.append("</table>")
    parts.append(
        "<h2>Cost of each stage</h2><table><tr><th>stage</th><th>seconds</th><th>this run</th></tr>"
    )
    parts += [
        f"<tr><td>{esc(c['stage'])}</td><td>{c['seconds']:.0f}</td>"
        f"<td>{'cached' if c['cached'] else 'ran'}</td></tr>"
        for c in rep.stage_costs
    ]
    parts.append("</table><h2>Versions</h2><ul>")
    parts += [f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in rep.versions.items()]
    parts.append(f"</ul><h2>Resolved config</h2><pre>{esc(rep.config_yaml)}</pre></body></html>")
    return "\n".join(parts)


def write_report(rep: Report, run_dir: Path) -> tuple[Path, Path]:
    from spear_mm.io.atomic import atomic_write_text

    md, page = run_dir / "report.md", run_dir / "report.html"
    atomic_write_text(md, to_markdown(rep))
    atomic_write_text(page, to_html(rep, run_dir))
    return md, page
