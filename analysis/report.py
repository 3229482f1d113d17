"""Regenerate every figure replica and the claims report from stored results:
`python -m analysis.report [--scale tiny] [--results results]`.

Reads results/<scale>/<study>/trials.parquet for each study that has been run, redraws its
figure, and writes results/<scale>/CLAIMS.md: a forest plot of every comparison (forest.png), then
per claim its comparisons with form, margin, effect, 95% CI, Holm-adjusted p-values, verdict, seeds
and the seeds 80% power would need, and a link to the figure. Studies not run yet are listed as missing, with the
command that runs them.

`python -m analysis.report --study NAME --folder DIR` redraws one study's figures from
DIR/trials.parquet into DIR and prints their PNG paths, so the runner need not import analysis.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import pandas as pd

from analysis.bernoulli import PAPER_STATED, scientific, tail_probability
from analysis.claims import DECIDED, VERDICT_RULE, claim_health, evaluate_claims, left_out_trials
from analysis.figures import plot_forest, plot_health, plot_label_quality, plot_overclustering, plot_study
from analysis.html import write_site
from analysis.results import ResultsError, load_trials
from analysis.sequential import study_level, study_levels
from analysis.stats import ALPHA, MAX_SEEDS_SHOWN
from analysis.tables import bernoulli_table, markdown, table1, table6, table7, table8
from catalogue import CLAIMS, REGISTERED_IN, SEED_BUDGET, STUDIES, study_spec
from study.cli import OneLineParser
from study.files import replace_file

PAPER_TABLES = {"methods": ("table1", table1, "Table 1: base methods without and with the inter-image branch "
                            "(claim 13)"),
                "overclustering": ("table6", table6, "Table 6: over-clustering frequency, first and last epoch"),
                "triplet-margin": ("table7", table7, "Table 7: margin C"),
                "rank-k": ("table8", table8, "Table 8: rank of the deputy negative")}


def load_all(scale_folder: Path) -> dict[str, pd.DataFrame]:
    return {name: load_trials(scale_folder / name, name) for name in STUDIES
            if (scale_folder / name / "trials.parquet").exists()}


def draw_figures(tables: dict[str, pd.DataFrame], scale_folder: Path, claims: pd.DataFrame) -> dict[str, Path]:
    return {key: path for name, table in tables.items()
            for key, path in study_figures(name, table, scale_folder / name, claims).items()}


def study_figures(name: str, table: pd.DataFrame, folder: Path, claims: pd.DataFrame) -> dict[str, Path]:
    """A study's replica with the paired effects of its comparisons in `claims` (evaluate_claims' rows) and,
    for labels and overclustering, its per-epoch curves, drawn into folder."""
    spec = study_spec(name, folder)
    own = claims[claims["study"] == name] if len(claims) else None  # a sweep has no registered claims
    figures = {spec.figure: plot_study(table, spec, folder / spec.figure, own)}
    health = plot_health(table, spec, folder / "health")
    if health is not None:
        figures[f"{name}-health"] = health
    if name == "labels":
        figures["labels-quality"] = plot_label_quality(table, spec, folder / "label_quality")
    if name == "overclustering":
        figures["overclustering-curves"] = plot_overclustering(table, spec, folder / "overclustering_curves")
    return figures


def _number(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}f}"


def _seeds(value: float) -> str:
    return "n/a" if math.isnan(value) else str(int(value))


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


OUTCOMES = ("reproduced", "contradicted", "negligible", "not testable", "inconclusive", "missing")


README_BEGIN = "<!-- claims: written by `python -m analysis.report --readme README.md` from claims.csv; do not edit -->"
README_END = "<!-- end of claims -->"
def bernoulli_claim() -> tuple[str, dict, dict]:
    """Claim 12, arithmetic on the paper's own numbers (no runs): (verdict, exact tails, stated tails) for
    m = 104, p = 1/1000 at k = 5 and 52, in the same 3-digit notation as the paper's."""
    paper_p = Fraction(1, 1000)
    exact = {k: scientific(tail_probability(104, paper_p, k)) for k in (5, 52)}
    stated = PAPER_STATED[(104, paper_p)]
    return ("contradicted" if any(exact[k] != stated[k] for k in exact) else "reproduced"), exact, stated


def headline_markdown(claims: pd.DataFrame, scale: str) -> str:
    """One table row per claim (the catalogue's sentence, its verdict at this scale and why), from the
    columns of claims.csv, so that the README's headline is what the report decided."""
    texts = {claim.number: claim.text for claim in CLAIMS}
    rows = {}
    for number, part in claims.groupby("claim"):
        verdict = part["claim_verdict"].iloc[0]
        if verdict == "not testable":
            why = str(part.loc[part["verdict"] == "not testable", "not_testable"].iloc[0]).split(";")[0]
        else:
            shown = part[part["verdict"] == verdict] if (part["verdict"] == verdict).any() else part
            why = "; ".join(f"{row.comparison} ({row.metric}): {row.effect:+.3g} [{row.ci_low:+.3g}, {row.ci_high:+.3g}]"
                            for row in shown.head(2).itertuples())
        rows[int(number)] = f"| {number} | {texts[int(number)]} | **{verdict}** | {why} |"
    verdict, exact, stated = bernoulli_claim()
    rows[12] = (f"| 12 | The Bernoulli bound: with m = 104 negatives and p = 1/1000, at least k = 5 and k = 52 "
                f"same-class negatives have probabilities {stated[5]} and {stated[52]}. | **{verdict}** | the paper's "
                f"formula gives {exact[5]} and {exact[52]} (40-digit arithmetic, no seeds) |")
    header = [f"| claim | the paper says | at `{scale}` | why |", "|---|---|---|---|"]
    return "\n".join(header + [rows[number] for number in sorted(rows)]) + "\n"


def update_readme(readme: Path, block: str) -> None:
    """Replace what lies between the README's claim markers with `block`; raises ValueError without them."""
    text = readme.read_text()
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no claims block; put the lines {README_BEGIN!r} and {README_END!r} where it goes")
    replace_file(readme, text[:start + len(README_BEGIN)] + "\n" + block + text[end:])


def claims_markdown(claims: pd.DataFrame, figures: dict[str, Path], tables: dict[str, pd.DataFrame],
                    scale_folder: Path, scale: str, levels: dict[str, float]) -> str:
    verdicts = claims.groupby("claim", sort=False)["claim_verdict"].first()
    counts = ", ".join(f"{outcome} {', '.join(str(n) for n, v in verdicts.items() if v == outcome)}"
                       for outcome in OUTCOMES if outcome in set(verdicts))
    decided = sum(v in DECIDED for v in verdicts)
    lines = [f"# Claims at scale `{scale}`", "",
             "Regenerated by `python -m analysis.report --scale " + scale + "` from the results tables beside "
             f"this file. Of the {len(verdicts)} claims tested on seeds, {decided} end decided (reproduced, "
             f"contradicted, negligible or not testable at this scale): {counts}. Claim 12 is decided in exact "
             "arithmetic (below).", "",
             f"![every comparison]({figures['forest'].relative_to(scale_folder)})", "",
             f"**Verdict rule.** {VERDICT_RULE}", "",
             f"**Margins** are registered in `catalogue/__init__.py` (MARGIN_RULE, PAPER_GAINS, FIGURE_GAP, "
             f"SEED_BUDGET = {SEED_BUDGET}; the rule, gates and margins were registered in commit {REGISTERED_IN}: a "
             "study whose code version (below) predates it was run before they were written): *margin* is the smallest effect of interest the tests use; for a "
             "quality metric, *scaled gap* is the paper's gap scaled to this scale's trained gain and "
             "*resolvable* the effect the seed budget resolves at the study's residual SD.", "",
             f"**Seeds for 80% power** (per arm, one-sided {ALPHA:.1%} test, before Holm, from the blocked model's "
             "residual SD as a paired design, power from the noncentral t): *observed*, were the true effect the "
             "observed one, to reach either verdict; *margin*, were it the smallest effect of interest "
             "(superiority) or 0 (the other forms, whose boundary is the margin). n/a: no finite answer up to "
             f"{MAX_SEEDS_SHOWN} (an effect at the boundary). *seeds*: the seeds per arm behind the comparison.",
             ""]
    for study, level in sorted(levels.items()):
        lines.append(f"`{study}` added seeds in rounds (`--seeds auto`): its tests run at the sequential boundary's "
                     f"one-sided level {level:.5f} (analysis/sequential.py).")
    by_number = {claim.number: claim for claim in CLAIMS}
    for number, part in claims.groupby("claim", sort=False):
        first = part.iloc[0]
        figure = figures.get(first["figure"])
        link = f"[{first['figure']}]({figure.relative_to(scale_folder)})" if figure else first["figure"]
        lines += ["", f"### Claim {number}: **{first['claim_verdict']}**", "", f"{first['text']} ({link})", "",
                  f"Health: {claim_health(tables, by_number[number]) if number in by_number else '-'}.", "",
                  "| comparison | form | metric | margin (scaled gap / resolvable) | effect | 95% CI | "
                  "Holm p support / against / negligible | verdict | seeds | seeds for power: observed / margin |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for _, row in part.iterrows():
            interval = "-" if math.isnan(row["ci_low"]) else f"[{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]"
            sizes = "" if math.isnan(row["scaled_gap"]) else \
                f" ({row['scaled_gap']:.3g} / {row['resolvable']:.3g})"
            verdict = row["verdict"] + (f": {row['not_testable']}" if row["not_testable"] else "")
            lines.append(f"| {row['study']}: {row['comparison']} | {row['form']} | {row['metric']} | "
                         f"{row['margin']:.3g}{sizes} | {row['effect']:+.3g} | {interval} | "
                         f"{_p(row['p_support'])} / {_p(row['p_against'])} / {_p(row['p_negligible'])} | {verdict} | "
                         f"{row['seeds']} | {_seeds(row['seeds_observed'])} / {_seeds(row['seeds_margin'])} |")
    missing = sorted({row["study"] for _, row in claims.iterrows() if row["verdict"] == "missing"})
    if missing:
        lines += ["", "Studies without results yet (their claims read *missing*): "
                  + ", ".join(f"`python -m study.run {name} --scale {scale}`" for name in missing) + "."]
    left_out = left_out_trials(tables)
    lines += ["", "Unfinished trials left out of every verdict: "
              + ("; ".join(f"{study}: {', '.join(trials)}" for study, trials in left_out.items()) or "none") + "."]
    lines += positive_control(scale_folder.parent / "positive-control")
    lines += provenance(tables)
    lines += table_sections(tables, scale_folder)
    table4 = scale_folder / "table4" / "table4.md"
    if table4.exists():  # written by `python -m study.measure.table4`
        lines += ["", "## Table 4 replica (claim 11, measured in one run)", "",
                  *table4.read_text().splitlines()[2:]]
    return "\n".join(lines) + "\n"


def positive_control(folder: Path) -> list[str]:
    """The positive control's search (study.measure.positive_control), if it has been run: does the inter branch
    help its base at any CPU scale tried? Then its follow-up (more seeds at scales chosen after the search), if any."""
    path = folder / "effects.csv"
    if not path.exists():
        return []
    lines = ["", "## Positive control: does the inter branch help its base at some CPU scale?", "",
             f"From `{folder.name}/effects.csv` (`python -m study.measure.positive_control`, see its RUN.md): NPIDv2-InterCLR "
             "under the paper's lambda protocol (lambda 0.75, random negatives, margin 0) against NPIDv2, paired over "
             "seeds (inter - base; NPIDv2-InterCLR at lambda 1 computes NPIDv2 bit for bit, so this is also lambda 0.75 "
             "- lambda 1); a scale passes when both kNN and linear intervals lie above 0. *positives / neighbours*: the "
             "share of the branch's positives with the query's class over the base encoder's kNN top-1; below 1 the "
             "pseudo-label positive is a worse teacher than the encoder's own neighbours.", "",
             *effects_lines(pd.read_csv(path), "Passing")]
    follow_up = folder / "follow-up" / "effects.csv"
    if follow_up.exists():
        lines += ["", "### Follow-up: more seeds at scales chosen after reading the search", "",
                  f"From `{folder.name}/follow-up/` (its RUN.md; the folder's README says why these "
                  "scales): the same arms and trials with more seeds, so a pass here names a candidate scale for a registered run (the "
                  "InterCLR studies at that scale), not a confirmed positive control.", "",
                  *effects_lines(pd.read_csv(follow_up), "Passing at these seeds")]
    return lines


def effects_lines(effects: pd.DataFrame, passing_label: str) -> list[str]:
    """Which scales pass (kNN and linear intervals both above 0), then the kNN and linear rows as a table."""
    shown = effects[effects["metric"].isin(["knn_top1", "linear_top1"])]
    passing = [scale for scale, part in shown[shown["comparison"] == "inter - base"].groupby("scale")
               if len(part) == 2 and (part["ci_low"] > 0).all()]
    lines = [f"{passing_label}: {', '.join(passing) or 'none of the scales tried'}.", "",
             "| scale | settings | comparison | metric | seeds | effect | 95% CI | trained gain | inter loss / chance | "
             "positives / neighbours | s per trial |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in shown.itertuples():
        interval = "-" if math.isnan(row.ci_low) else f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
        lines.append(f"| {row.scale} | {row.settings} | {row.comparison} | {row.metric} | {row.seeds} | "
                     f"{row.effect:+.2f} | {interval} | {row.trained_gain:+.2f} | {row.loss_inter_to_chance:.2f} | "
                     f"{row.positives_over_neighbours:.2f} | {row.seconds_per_trial:.0f} |")
    return lines


def provenance(tables: dict[str, pd.DataFrame]) -> list[str]:
    """Per study: the code and torch versions its rows were made with, its seeds and trials. Verdicts of
    studies from different code versions are not comparable as one run; the section says so."""
    lines = ["", "## Where the numbers come from", "",
             "| study | code version | torch | seeds | trials |", "|---|---|---|---|---|"]
    versions = set()
    for name, table in tables.items():
        codes = sorted(table["code_version"].dropna().unique()) if "code_version" in table else []
        torches = sorted(table["torch_version"].dropna().unique()) if "torch_version" in table else []
        versions.update(codes)
        lines.append(f"| {name} | {', '.join(codes) or 'unrecorded'} | {', '.join(torches) or 'unrecorded'} | "
                     f"{table['seed'].nunique()} | {table['config_hash'].nunique()} |")
    if len(versions) > 1:
        lines += ["", f"These results come from {len(versions)} code versions; a study's verdicts rest on its "
                  "own version, and until every study is rerun from one, studies are not one run."]
    return lines


def table_sections(tables: dict[str, pd.DataFrame], scale_folder: Path) -> list[str]:
    """Tables 1 and 6-8 beside the papers' numbers (also written as CSV), and claim 12, the Bernoulli bound."""
    lines = []
    for study, (name, build, title) in PAPER_TABLES.items():
        if study in tables:
            frame = build(tables[study])
            replace_file(scale_folder / f"{name}.csv", frame.to_csv(index=False))
            lines += ["", f"## {title}", "", markdown(frame)]
    verdict, exact, stated = bernoulli_claim()
    lines += ["", "## Claim 12: the Bernoulli bound", "",
              f"**{verdict}** (40-digit arithmetic, no seeds involved): for m = 104, p = 1/1000 the paper's formula "
              f"gives {exact[52]} for k = 52 and {exact[5]} for k = 5, not the stated {stated[52]} and {stated[5]} "
              "(`python -m analysis.bernoulli --m 104 --p 0.001 --k 1 5 52`)."]
    triplet = next((tables[s] for s in ("overclustering", "rank-k") if s in tables), None)
    if triplet is not None and "negatives_per_query" in triplet.columns:
        m = int(triplet["negatives_per_query"].dropna().iloc[0])
        p = Fraction(float(triplet["same_class_probability"].dropna().iloc[0])).limit_denominator(10 ** 6)
        frame = bernoulli_table(m, p, {"rank-1": 1, "rank-5": 5, "median": m // 2})
        replace_file(scale_folder / "bernoulli.csv", frame.to_csv(index=False))
        blind = 1 - (1 - float(p)) ** (m + 1)
        lines += ["", f"With this data (m = {m} negatives per query, p = {float(p):.4f}), a query has at least k "
                  "same-class negatives with the probabilities below: at small k such false negatives are "
                  "near certain, so the measured over-clustering frequencies in Table 6 should be read against "
                  "these values, not the paper's.", "", markdown(frame.fillna("")), "",
                  f"The batch size was chosen so that the median deputy (rank {m // 2}) sits well above the "
                  f"expected {m * float(p):.1f} same-class negatives per query. Omega is an event of the whole "
                  f"batch, though: even a ranking blind to classes puts a same-class negative at any fixed rank "
                  f"for some query of the {m + 1} with probability 1 - (1 - p)^{m + 1} = {blind:.6f}, so with 10 "
                  f"classes Pr(Omega) is near 1 at every k. The per-query share of same-class deputies (Table 6's "
                  f"last columns; about p = {float(p):.3f} for a class-blind ranking) is the measurement that can "
                  f"still show over-clustering here, so claim 8 is tested on it."]
    return lines


def study_claims(name: str, table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The claims with comparisons in this study, judged on its rows alone, at the level of its last
    sequential look where its folder records looks."""
    level = study_level(folder, name, table["seed"].nunique())
    alphas = {name: level} if level is not None else {}
    claims = [claim for claim in CLAIMS if any(part.study == name for part in claim.comparisons)]
    return evaluate_claims({name: table}, claims, alphas)


def redraw_study(name: str, folder: Path) -> int:
    """`--study NAME --folder DIR`: one study's figures from DIR/trials.parquet, their PNG paths on stdout."""
    try:
        spec = study_spec(name, folder)
    except KeyError:
        return fail(f"unknown study {name!r}; give --study one of {', '.join(STUDIES)}, or a sweep's name with its "
                    f"folder")
    try:
        table = load_trials(folder, name)
    except ResultsError as error:
        return fail(str(error))
    metric = spec.metric
    if metric not in table.columns:
        return fail(f"{folder / 'trials.parquet'} has no column {metric}; is it a {name} table? rerun "
                    f"`python -m study.run {name} --out {folder}`")
    try:
        figures = study_figures(name, table, folder, study_claims(name, table, folder))
    except OSError as error:
        return fail(unwritable(folder, error))
    except ResultsError as error:
        return fail(str(error))
    for figure in figures.values():
        print(figure)
    return 0


def unwritable(folder: Path, error: OSError) -> str:
    return f"cannot write into {folder} ({error.strerror or type(error).__name__}); make it writable, or free space there"


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--results", default="results", help="the results folder (default results/)")
    parser.add_argument("--study", help="redraw only this study's figures (with --folder)")
    parser.add_argument("--folder", type=Path, help="the folder holding the study's trials.parquet")
    parser.add_argument("--readme", type=Path, help="also write the claims' headline into this README, between "
                                                     "its claim markers (the repository's README.md for the "
                                                     "committed results)")
    args = parser.parse_args(argv)
    if (args.study is None) != (args.folder is None):
        return fail("--study NAME and --folder DIR go together; give both, or neither for the whole report")
    if args.study is not None:
        return redraw_study(args.study, args.folder)
    scale_folder = Path(args.results) / args.scale
    try:
        tables = load_all(scale_folder)
    except ResultsError as error:
        return fail(str(error))
    if not tables:
        return fail(f"no study results under {scale_folder}; run `python -m study.run STUDY` first")
    try:
        levels = study_levels(scale_folder)  # a damaged looks.json is refused before anything is drawn
        claims = evaluate_claims(tables, CLAIMS, levels)
        figures = draw_figures(tables, scale_folder, claims)
        figures["forest"] = plot_forest(claims, scale_folder / "forest")
        replace_file(scale_folder / "CLAIMS.md", claims_markdown(claims, figures, tables, scale_folder, args.scale,
                                                                levels))
        replace_file(scale_folder / "claims.csv", claims.drop(columns=["text"]).to_csv(index=False))
        write_site(scale_folder, args.scale, tables, claims, figures,
                   {claim.number: claim_health(tables, claim) for claim in CLAIMS})
        if args.readme is not None:
            update_readme(args.readme, headline_markdown(claims, args.scale))
    except OSError as error:
        return fail(unwritable(scale_folder, error))
    except ValueError as error:
        return fail(str(error))
    print(f"{len(figures)} figure(s), CLAIMS.md and index.html written under {scale_folder}")
    for number, part in claims.groupby("claim", sort=False):
        print(f"  claim {number}: {part['claim_verdict'].iloc[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
