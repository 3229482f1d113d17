"""The static HTML report: results/<scale>/index.html, a page per study and the claims page.

Written by `python -m analysis.report` beside CLAIMS.md, from the same tables, verdicts and figures; it
needs no server (open index.html in a browser) and loads nothing from outside the results folder. Every
string that comes from a results file is escaped, since a results folder may come from someone else.
"""

from __future__ import annotations

import json
import math
import re
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from catalogue import CLAIMS, study_spec
from study.files import replace_file

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
img.thumb { max-width: 22em; }
.verdict { font-weight: bold; white-space: nowrap; }
.reproduced { color: #027a48; } .contradicted { color: #b42318; } .negligible { color: #175cd3; }
.not-testable { color: #6941c6; } .inconclusive, .missing { color: #667085; }
code { background: #f6f6f6; padding: 0 0.2em; }
nav { margin-bottom: 1.5em; }
"""
FIGURE_TITLES = {"health": "Mechanism health per epoch (mean, 95% interval over seeds)",
                 "label_quality": "Pseudo-label quality per epoch", "overclustering_curves": "Over-clustering per epoch"}
RUN_FACTS = ("command", "to rerun it from the repository root", "code version", "finished", "wall time", "rows")


def write_site(scale_folder: Path, scale: str, tables: dict[str, pd.DataFrame], claims: pd.DataFrame,
               figures: dict[str, Path], health: dict[int, str]) -> Path:
    """Write index.html, study-<name>.html per study and claims.html into scale_folder; returns index.html.
    `figures`: report's figure paths by key (a study's figure stem, "forest", ...); `health`: each claim's
    health line (analysis.claims.claim_health)."""
    pages = {name: f"study-{name}.html" for name in tables}
    for name, table in tables.items():
        replace_file(scale_folder / pages[name],
                     study_page(name, table, scale_folder, claims, figures, scale))
    replace_file(scale_folder / "claims.html", claims_page(claims, figures, health, scale_folder, scale, pages))
    index = scale_folder / "index.html"
    replace_file(index, index_page(tables, claims, figures, scale_folder, scale, pages))
    return index


def page(title: str, body: list[str]) -> str:
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
                      '<nav><a href="index.html">studies</a> · <a href="claims.html">claims</a> · '
                      '<a href="CLAIMS.md">CLAIMS.md</a></nav>', f"<h1>{escape(title)}</h1>", *body,
                      "</body>", "</html>"]) + "\n"


def table_html(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; the cells are HTML already (escape text with `escape` before)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict_html(verdict: str) -> str:
    return f'<span class="verdict {escape(verdict.replace(" ", "-"))}">{escape(verdict)}</span>'


def image(path: Path, scale_folder: Path, alt: str, css: str = "") -> str:
    source = escape(quote(path.relative_to(scale_folder).as_posix()), quote=True)
    return f'<a href="{source}"><img src="{source}" alt="{escape(alt, quote=True)}"{css}></a>'


def run_facts(folder: Path) -> dict[str, str]:
    """The `- key: value` lines of a study's RUN.md (study.run writes them), read as text."""
    path = folder / "RUN.md"
    facts = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            match = re.match(r"- ([a-z0-9 ]+): (.*)$", line)
            if match and match.group(1) in RUN_FACTS:
                facts[match.group(1)] = match.group(2).strip("`")
    return facts


def study_figures(name: str, figures: dict[str, Path], scale_folder: Path) -> list[Path]:
    """The figures the report drew into a study's folder, the replica first (the report draws it first), so
    that no other file of the folder is ever shown."""
    return [path for path in figures.values() if path.parent == scale_folder / name]


def number(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}g}"


def comparison_rows(part: pd.DataFrame) -> list[list[str]]:
    rows = []
    for row in part.itertuples():
        interval = "-" if math.isnan(row.ci_low) else f"[{number(row.ci_low)}, {number(row.ci_high)}]"
        why = f"<br>{escape(str(row.not_testable))}" if isinstance(row.not_testable, str) and row.not_testable else ""
        rows.append([escape(str(row.claim)), escape(f"{row.study}: {row.comparison}"), escape(row.form),
                     escape(row.metric), escape(f"{row.margin:.3g}"), escape(number(row.effect)), escape(interval),
                     verdict_html(row.verdict) + why, escape(str(row.seeds))])
    return rows


COMPARISON_HEADER = ["claim", "comparison", "form", "metric", "margin", "effect", "95% CI", "verdict", "seeds"]


def index_page(tables: dict[str, pd.DataFrame], claims: pd.DataFrame, figures: dict[str, Path], scale_folder: Path,
               scale: str, pages: dict[str, str]) -> str:
    rows = []
    for name, table in tables.items():
        spec = study_spec(name, scale_folder / name)
        facts = run_facts(scale_folder / name)
        own = claims[claims["study"] == name] if len(claims) else claims
        verdicts = "<br>".join(f"claim {escape(str(row.claim))} {escape(row.comparison)}: {verdict_html(row.verdict)}"
                               for row in own.itertuples()) or "no registered claim"
        shown = study_figures(name, figures, scale_folder)
        rows.append([f'<a href="{escape(pages[name], quote=True)}">{escape(name)}</a><br>'
                     f"{escape(spec.paper)} {escape(spec.figure)}",
                     image(shown[0], scale_folder, f"{name} replica", ' class="thumb"') if shown else "-",
                     escape(str(table["seed"].nunique())),
                     escape(code_versions(table)),
                     escape(facts.get("wall time", "-")), verdicts])
    verdict_counts = claims.groupby("claim", sort=False)["claim_verdict"].first().value_counts() if len(claims) else {}
    summary = ", ".join(f"{escape(v)} {n}" for v, n in verdict_counts.items())
    body = [f"<p>Every study run at scale <code>{escape(scale)}</code>, regenerated by "
            f"<code>python -m analysis.report --scale {escape(scale)}</code>. Claims tested on seeds: {summary} "
            '(<a href="claims.html">all claims</a>; claim 12, exact arithmetic on the paper\'s numbers, is in '
            '<a href="CLAIMS.md">CLAIMS.md</a>).</p>']
    body.append(table_html(["study", "replica", "seeds", "code version", "wall time", "verdicts"], rows))
    if "forest" in figures:
        body += ["<h2>Every comparison</h2>", image(figures["forest"], scale_folder, "every comparison against its margin")]
    return page(f"Study results at scale {scale}", body)


def code_versions(table: pd.DataFrame) -> str:
    if "code_version" not in table.columns:
        return "unrecorded"
    return ", ".join(sorted(map(str, table["code_version"].dropna().unique()))) or "unrecorded"


def arm_settings(name: str, table: pd.DataFrame, folder: Path) -> tuple[str, str]:
    """(a note on where the settings come from, a table of each arm's settings that differ between arms):
    the resolved configurations in configs.json where the run saved them, else the catalogue's."""
    spec = study_spec(name, folder)
    arms = [value for value in spec.levels if value in set(table["value"])]
    configs = read_configs(folder / "configs.json")
    if configs is not None:
        by_arm = {}
        for row in table.drop_duplicates("config_hash").itertuples():
            if row.config_hash in configs:
                by_arm.setdefault(row.value, configs[row.config_hash])
        keys = sorted({k for c in by_arm.values() for k in c} - {"seed", "trial"})
        varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in by_arm.values()}) > 1]
        rows = [[escape(str(arm))] + [escape(str(by_arm.get(arm, {}).get(k, "-"))) for k in varying] for arm in arms]
        return ("Resolved settings that differ between arms, from <code>configs.json</code> "
                "(every key of every trial is there).", table_html(["arm", *varying], rows))
    fixed = "".join(f"<li><code>{escape(k)} = {escape(str(v))}</code></li>" for k, v in spec.fixed.items())
    rows = [[escape(str(arm)), escape(", ".join(f"{k} = {v}" for k, v in spec.settings_of(value).items()))]
            for arm, value in zip(spec.levels, spec.values) if arm in arms]
    return (f"The study's settings from the catalogue (this run predates <code>configs.json</code>); every arm "
            f"runs the scale profile with these fixed settings:<ul>{fixed}</ul>and sets:",
            table_html(["arm", "sets"], rows))


def read_configs(path: Path) -> dict | None:
    """configs.json as {config hash: {key: value}}, or None when absent or not of that shape (plain JSON,
    nothing in it is run)."""
    if not path.is_file():
        return None
    try:
        configs = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting deeper than json reads
        return None
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        return None
    return configs


def study_page(name: str, table: pd.DataFrame, scale_folder: Path, claims: pd.DataFrame,
               figures: dict[str, Path], scale: str) -> str:
    folder = scale_folder / name
    spec = study_spec(name, folder)
    facts = run_facts(folder)
    body = [table_html(["run", ""], [[escape(k), f"<code>{escape(v)}</code>" if k.endswith(("command", "root"))
                                   else escape(v)] for k, v in facts.items()]) if facts else
            "<p>No RUN.md in this folder.</p>"]
    for path in study_figures(name, figures, scale_folder):
        title = FIGURE_TITLES.get(path.stem, f"Replica of {spec.paper} {path.stem}")
        body.append(f"<h2>{escape(title)}</h2>" + image(path, scale_folder, f"{name}: {path.stem}"))
    own = claims[claims["study"] == name] if len(claims) else claims
    if len(own):
        body += ["<h2>Comparisons</h2>", table_html(COMPARISON_HEADER, comparison_rows(own))]
    note, settings = arm_settings(name, table, folder)
    body += ["<h2>Arms</h2>", f"<p>{note}</p>", settings, "<h2>Trials</h2>",
             "<p>" + " · ".join(f'<a href="{escape(name, quote=True)}/{f}">{f}</a>' for f in
                                ("trials.csv", "trials.parquet", "RUN.md", "configs.json", "looks.json")
                                if (folder / f).is_file()) + "</p>",
             f"<p>{escape(str(table['config_hash'].nunique()))} trials, {escape(str(len(table)))} rows.</p>"]
    return page(f"{name}: {spec.paper} {spec.figure} at scale {scale}", body)


def claims_page(claims: pd.DataFrame, figures: dict[str, Path], health: dict[int, str], scale_folder: Path,
                scale: str, pages: dict[str, str]) -> str:
    texts = {claim.number: claim.text for claim in CLAIMS}
    body = [image(figures["forest"], scale_folder, "every comparison against its margin")] if "forest" in figures else []
    for number_, part in claims.groupby("claim", sort=False):
        study = part["study"].iloc[0]
        link = f' (<a href="{escape(pages[study], quote=True)}">{escape(study)}</a>)' if study in pages else ""
        body += [f"<h2>Claim {escape(str(number_))}: {verdict_html(part['claim_verdict'].iloc[0])}</h2>",
                 f"<p>{escape(texts.get(int(number_), ''))}{link}</p>",
                 f"<p>Health: {escape(health.get(int(number_), '-'))}.</p>",
                 table_html(COMPARISON_HEADER, comparison_rows(part))]
    body.append('<p>Claim 12 (exact arithmetic) and the tables beside the papers\' numbers are in '
                '<a href="CLAIMS.md">CLAIMS.md</a>.</p>')
    return page(f"Claims at scale {scale}", body)
