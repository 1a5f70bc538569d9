"""The collected table (``OUT_DIR/metrics.csv``) and the static report (``OUT_DIR/index.html``) of a reproduction.

The report needs no server: one HTML file with relative links into ``units/``, every text escaped. It shows the
setting first (revision, machine, package versions, the backbone note), then each unit's status and time, every
metric of every unit with backbone / weights / dataset / protocol / variant, the claims table, each method's
ablation table with the paper's number for the same change and the paper's own reported numbers (every paper
number in a column headed "paper", shaded), and every figure as a thumbnail linking to the executed notebook
rendered to HTML. A small inline script counts the images that loaded into ``<body data-images-loaded>``, which
``benchmarks/report_browser_check.py`` reads from a headless browser.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd

from nbseg.claims.runner import BACKBONE_NOTE
from nbseg.io import atomic_write_text
from nbseg.notebook_runner.notebooks import METRICS_FILE
from nbseg.notebook_runner.run import _flatten
from nbseg.reproduce.plan import CLAIMS_FOLDER, Plan, Unit
from nbseg.reproduce.run import MARKER, UNIT_INFO, Summary, unit_dir

METRICS_CSV = "metrics.csv"
INDEX = "index.html"
FACT_COLUMNS = ["backbone", "weights", "dataset", "protocol", "variant"]
COLUMNS = ["unit", "metric", "value", *FACT_COLUMNS]
THUMB_PX = 220


# ----------------------------------------------------------------------------------------------------------------
# the collected table


def _unit_metrics(out: Path, unit: Unit) -> list[tuple[str, object]]:
    folder = unit_dir(out, unit)
    if unit.kind == "notebook":
        path = folder / Path(unit.source).stem / METRICS_FILE
        return _flatten(json.loads(path.read_text())) if path.is_file() else []
    if unit.kind == "ablate":
        from nbseg.methods.base import get_method

        spec = get_method(unit.source)
        table = pd.read_csv(folder / spec.ablation_table)
        ours = [c for c in spec.ablation_columns.values() if c in table]
        return [(f"{row['ablation']}/{column}", row[column]) for _, row in table.iterrows() for column in ours
                if pd.api.types.is_number(row[column]) and not pd.isna(row[column])]
    if unit.kind == "claims":
        table = pd.read_csv(folder / CLAIMS_FOLDER / "claims.csv")
        return [(f"{row['claim id']}/{what}", row[what]) for _, row in table.iterrows()
                for what in ("effect mean", "verdict")]
    return []


def collect(out: str | Path, plan: Plan) -> pd.DataFrame:
    """Every metric of every finished unit of ``plan`` (columns :data:`COLUMNS`), written to ``metrics.csv``."""
    out = Path(out)
    rows = []
    for unit in plan.units:
        if not (unit_dir(out, unit) / UNIT_INFO).is_file():
            continue
        facts = json.loads((unit_dir(out, unit) / UNIT_INFO).read_text()).get("facts", {})
        rows += [(unit.name, key, value, *(facts.get(c, "") for c in FACT_COLUMNS))
                 for key, value in _unit_metrics(out, unit)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    atomic_write_text(out / METRICS_CSV, table.to_csv(index=False))
    return table


# ----------------------------------------------------------------------------------------------------------------
# html


def _text(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _table(frame: pd.DataFrame, paper_columns=()) -> str:
    """An HTML table; columns in ``paper_columns`` are headed "paper: ..." and shaded."""
    if frame is None or not len(frame):
        return "<p><em>nothing recorded</em></p>"
    heads = "".join(f'<th class="paper">paper: {_text(c)}</th>' if c in paper_columns else f"<th>{_text(c)}</th>"
                    for c in frame.columns)
    body = "".join("<tr>" + "".join(f'<td class="paper">{_text(v)}</td>' if c in paper_columns
                                    else f"<td>{_text(v)}</td>" for c, v in row.items()) + "</tr>"
                   for _, row in frame.iterrows())
    return f"<table><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def _link(href: Path, out: Path, label: str) -> str:
    return f'<a href="{html.escape(href.relative_to(out).as_posix(), quote=True)}">{_text(label)}</a>'


def _figures(out: Path, unit: Unit) -> str:
    """Every PNG a notebook unit wrote, as thumbnails linking to the executed notebook (HTML)."""
    stem = Path(unit.source).stem
    folder = unit_dir(out, unit) / stem
    page = folder / f"{stem}.html"
    thumbs = []
    for png in sorted(folder.rglob("*.png")):
        src = html.escape(png.relative_to(out).as_posix(), quote=True)
        thumbs.append(f'<figure><a href="{html.escape(page.relative_to(out).as_posix(), quote=True)}">'
                      f'<img src="{src}" width="{THUMB_PX}" alt="{_text(png.name)}"></a>'
                      f"<figcaption>{_text(png.relative_to(folder).as_posix())}</figcaption></figure>")
    notebook = _link(page, out, f"{stem} (executed notebook)") if page.is_file() else ""
    return f"<h3>{_text(unit.name)}</h3><p>{notebook}</p><div class=figs>{''.join(thumbs) or '(no figures)'}</div>"


def _method_tables(out: Path, unit: Unit) -> str:
    """A method's ablation table (ours, with the paper's number for the same change) and the paper's numbers."""
    from nbseg.methods.base import get_method

    spec = get_method(unit.source)
    parts = [f"<h3>{_text(spec.title)}</h3>"]
    path = unit_dir(out, unit) / spec.ablation_table
    if path.is_file():
        table = pd.read_csv(path)
        paper = [c for c in table.columns if "paper" in c.lower()]
        parts.append(f"<p>Ablations, ours ({_link(path, out, spec.ablation_table)}) beside the paper's number for "
                     "the same change:</p>" + _table(table, paper))
    if spec.paper is not None and spec.paper.values:
        numbers = pd.DataFrame([(k, v) for k, v in spec.paper.values.items()], columns=["table/row", "value %"])
        parts.append(f"<p class=paper>The paper's reported numbers (paper: {_text(spec.paper.source)}; setting: "
                     f"{_text(spec.paper.setting)}), not ours:</p>" + _table(numbers, ["table/row", "value %"]))
    return "".join(parts)


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:90em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 6px;font-size:85%;vertical-align:top}th{background:#eee}
.paper{background:#fff3cd}th.paper{background:#ffe08a}.failed{color:#b00020;font-weight:bold}
.figs{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;font-size:75%}img{border:1px solid #ccc}
.note{background:#eef;padding:.5em}"""

SCRIPT = """<script>
(function(){function count(){var imgs=document.images,ok=0;for(var i=0;i<imgs.length;i++){
if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}document.body.setAttribute('data-images-total',imgs.length);
document.body.setAttribute('data-images-loaded',ok);}window.addEventListener('load',count);})();
</script>"""


def write_report(out: str | Path, plan: Plan, summary: Summary | None = None) -> Path:
    """Collect the metrics and write ``OUT_DIR/index.html``; returns its path."""
    out = Path(out)
    metrics = collect(out, plan)
    record = json.loads((out / MARKER).read_text()) if (out / MARKER).is_file() else {}
    env = record.get("environment", {})
    status = pd.DataFrame(record.get("outcomes", []))
    if len(status):                                  # a cached unit took 0 s now: show what its run took
        took = {u.name: json.loads((unit_dir(out, u) / UNIT_INFO).read_text()).get("seconds") for u in plan.units
                if (unit_dir(out, u) / UNIT_INFO).is_file()}
        status = status.assign(**{"its run took (s)": status["unit"].map(took)})
        status = status[["unit", "status", "seconds", "its run took (s)", "reason", "cell"]]
    by_kind = {kind: [u for u in plan.units if u.kind == kind and (unit_dir(out, u) / UNIT_INFO).is_file()]
               for kind in ("notebook", "ablate", "claims")}
    claims = ""
    for unit in by_kind["claims"]:
        table = pd.read_csv(unit_dir(out, unit) / CLAIMS_FOLDER / "claims.csv")
        shown = ["claim id", "claim", "paper's evidence (as reported by the paper)",
                 "our measurement (mean ± std over seeds)", "effect", "backbone", "dataset", "protocol", "variant",
                 "verdict"]
        claims += _table(table[[c for c in shown if c in table]], ["paper's evidence (as reported by the paper)"])
    failures = [o for o in record.get("outcomes", []) if o.get("status") in ("failed", "skipped")]
    failed = "".join(f"<li class=failed>{_text(o['unit'])}: {_text(o['reason'])}</li>" for o in failures)
    sections = [
        "<h1>nbseg reproduction</h1>",
        f"<p class=note>{_text(BACKBONE_NOTE)} Numbers in columns headed <b>paper</b> (shaded) are the papers' own, "
        "reported in the papers' settings; every other number was measured here.</p>",
        _table(pd.DataFrame([("profile", plan.profile), ("preset", plan.preset or "none"),
                             ("git revision", plan.revision), ("started", record.get("started", "")),
                             ("wall time (s)", record.get("wall_s", "")),
                             ("machine", f"{env.get('platform', '')}, {env.get('cpu_count', '')} CPUs, "
                                         f"GPU: {env.get('cuda') or 'none'}"),
                             ("packages", ", ".join(f"{k} {v}" for k, v in sorted(record.get("packages", {}).items())))],
                            columns=["", "value"])),
        f"<h2>Units</h2><ul>{failed}</ul>" + _table(status),
        _link(out / METRICS_CSV, out, "metrics.csv") + f" ({len(metrics)} rows)",
        "<h2>Every metric of every unit</h2>" + _table(metrics),
        "<h2>Claims table</h2>" + (claims or "<p><em>not run</em></p>"),
        "<h2>Paper tables beside ours</h2>" + ("".join(_method_tables(out, u) for u in by_kind["ablate"])
                                                or "<p><em>no ablation batch ran</em></p>"),
        "<h2>Figures</h2>" + "".join(_figures(out, u) for u in by_kind["notebook"]),
    ]
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>nbseg reproduction</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}{SCRIPT}</body></html>\n")
    return atomic_write_text(out / INDEX, page)


__all__ = ["collect", "write_report", "METRICS_CSV", "INDEX", "COLUMNS"]
