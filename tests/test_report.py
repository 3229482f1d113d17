"""`python -m analysis.report --study NAME --folder DIR`: the runner's way to draw one study's figures."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from catalogue import CLAIMS

ROOT = Path(__file__).resolve().parents[1]


def redraw(*args):
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def results_table(values, metrics=("svm_map", "knn_top1", "label_nmi", "label_purity", "labels_changed",
                                   "cluster_size_cv")):
    rows = [{"value": value, "seed": seed, "epoch": epoch, "config_hash": f"{value}-{seed}",
             **{m: 10.0 + 5 * epoch + seed + i for i, m in enumerate(metrics)}}
            for i, value in enumerate(values) for seed in range(2) for epoch in range(3)]
    return pd.DataFrame(rows)


def test_study_figures_are_drawn_into_the_folder_and_listed(tmp_path):
    results_table(["online", "offline"]).to_parquet(tmp_path / "trials.parquet")
    result = redraw("--study", "labels", "--folder", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.splitlines()]
    assert sorted(p.name for p in written) == ["fig6a.png", "label_quality.png"]
    for path in written:
        assert path.parent == tmp_path and path.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "fig6a.pdf").exists()


def test_methods_study_draws_table1_figure(tmp_path):
    results_table(["npidv2", "npidv2-interclr"], metrics=("linear_top1", "svm_map", "knn_top1")).to_parquet(
        tmp_path / "trials.parquet")
    result = redraw("--study", "methods", "--folder", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "table1.png")]


def test_missing_or_unreadable_table_is_one_line_and_exit_2(tmp_path):
    missing = redraw("--study", "labels", "--folder", str(tmp_path))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "python -m study.run labels" in missing.stderr
    (tmp_path / "trials.parquet").write_text("not parquet")
    broken = redraw("--study", "labels", "--folder", str(tmp_path))
    assert broken.returncode == 2 and broken.stderr.startswith("error: ") and broken.stderr.count("\n") == 1
    unknown = redraw("--study", "no-such-study", "--folder", str(tmp_path))
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: ") and "labels" in unknown.stderr


def test_a_results_folder_without_tables_or_a_study_without_its_folder_is_one_line_and_exit_2(tmp_path):
    empty = redraw("--results", str(tmp_path), "--scale", "tiny")
    assert empty.returncode == 2 and empty.stdout == "" and empty.stderr.count("\n") == 1
    assert empty.stderr.startswith("error: no study results under") and list(tmp_path.iterdir()) == []
    alone = redraw("--study", "labels")
    assert alone.returncode == 2 and alone.stderr.startswith("error: ") and alone.stderr.count("\n") == 1
    assert "--folder" in alone.stderr


def test_report_writes_table1_and_judges_claim_13(tmp_path):
    folder = tmp_path / "tiny" / "methods"
    folder.mkdir(parents=True)
    methods = ["npidv2", "npidv2-interclr", "mocov2", "mocov2-interclr", "byol", "byol-interclr"]
    table = results_table(methods, metrics=("linear_top1", "svm_map", "knn_top1"))
    table.loc[table["value"].str.endswith("-interclr") & (table["epoch"] == 2), ["linear_top1", "svm_map"]] += 10.0
    table.assign(code_version="abc123").to_parquet(folder / "trials.parquet")
    result = redraw("--results", str(tmp_path), "--scale", "tiny")
    assert result.returncode == 0, result.stderr
    assert "claim 13: reproduced" in result.stdout and "claim 1: missing" in result.stdout
    claims = (tmp_path / "tiny" / "CLAIMS.md").read_text()
    # Every claim but 12 (arithmetic) is tested on seeds; only methods ran, so claim 13 alone is decided.
    assert "Of the 12 claims tested on seeds, 1 end decided" in claims
    assert "`python -m study.run labels --scale tiny`" in claims and "study.run methods --scale" not in claims
    assert "| methods | abc123 |" in claims and "code versions" not in claims  # one version: no warning
    assert "## Table 1" in claims and "| npidv2-interclr |" in claims
    assert "[table1](methods/table1.png)" in claims
    assert list(pd.read_csv(tmp_path / "tiny" / "table1.csv")["method"]) == methods
    assert "![every comparison](forest.png)" in claims and (tmp_path / "tiny" / "forest.png").exists()
    claim13 = next(c for c in CLAIMS if c.number == 13)
    assert claims.count(claim13.text) == 1  # the claim heads its group of six rows once
    assert claims.count("| methods: ") == 6
    assert "Unfinished trials left out of every verdict: none." in claims


def test_report_lists_unfinished_trials_it_left_out(tmp_path):
    folder = tmp_path / "tiny" / "labels"
    folder.mkdir(parents=True)
    table = results_table(["online", "offline"], metrics=("svm_map", "knn_top1", "label_nmi", "label_purity",
                                                         "labels_changed", "cluster_size_cv", "epoch_time_s"))
    table = table[~((table["value"] == "offline") & (table["seed"] == 1) & (table["epoch"] == 2))]
    table.to_parquet(folder / "trials.parquet")
    result = redraw("--results", str(tmp_path), "--scale", "tiny")
    assert result.returncode == 0, result.stderr
    claims = (tmp_path / "tiny" / "CLAIMS.md").read_text()
    assert "Unfinished trials left out of every verdict: labels: offline seed 1 (epoch 1 of 2)." in claims


def test_epoch_axes_tick_whole_epochs():
    import matplotlib

    matplotlib.use("Agg")
    from analysis.figures import draw_label_quality, draw_study
    from catalogue import STUDIES

    table = results_table(["online", "offline"])  # epochs 0, 1, 2: matplotlib would tick 0.25, 0.5, ...
    for figure, axes in ((draw_study(table, STUDIES["labels"]), [-1]),
                         (draw_label_quality(table, STUDIES["labels"]), [0, 1, 2, 3])):
        for index in axes:
            ticks = figure.axes[index].get_xticks()
            assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks


def test_knn_curve_joins_the_evaluated_epochs_when_eval_every_skips_some():
    import matplotlib

    matplotlib.use("Agg")
    from analysis.figures import draw_study
    from catalogue import STUDIES

    table = results_table(["online", "offline"])
    table.loc[table["epoch"] == 1, "knn_top1"] = float("nan")  # eval_every=2 over 2 epochs: 0 and 2 measured
    curves = draw_study(table, STUDIES["labels"]).axes[-1]
    for line in curves.get_lines():
        assert list(line.get_xdata()) == [0, 2] and not pd.isna(line.get_ydata()).any()


def test_diagnostics_draw_inter_loss_and_label_figures_and_refuse_a_table_without_losses(tmp_path):
    margins = results_table([-0.5, 0.0], metrics=("loss_inter", "label_nmi", "labels_changed", "clusters_reseeded"))
    margins.to_parquet(tmp_path / "trials.parquet")
    run = [sys.executable, "-m", "analysis.diagnostics", "--before", str(tmp_path), "--after", str(tmp_path)]
    drawn = subprocess.run([*run, "--out", str(tmp_path / "figures")], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert drawn.returncode == 0, drawn.stderr
    figures = drawn.stdout.splitlines()[:2]
    assert [Path(line).name for line in figures] == ["inter_loss.png", "label_nmi.png"]
    assert all(Path(line).read_bytes().startswith(b"\x89PNG") for line in figures)
    assert set(pd.read_csv(tmp_path / "figures" / "diagnostics.csv")["run"]) == {"before", "after"}
    absent = subprocess.run([*run, "--value", "0.25", "--out", str(tmp_path / "none")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert absent.returncode == 2 and absent.stderr.startswith("error: ") and "-0.5, 0" in absent.stderr
    margins.drop(columns="loss_inter").to_parquet(tmp_path / "trials.parquet")
    lacking = subprocess.run([*run, "--out", str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert lacking.returncode == 2 and lacking.stderr.count("\n") == 1 and "loss_inter" in lacking.stderr
    assert not (tmp_path / "none").exists()


def test_a_read_only_folder_is_one_line_and_exit_2(tmp_path):
    scale = tmp_path / "tiny"
    scale.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(scale)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); root ignores file modes, so a mount it must be")
    folder = scale / "labels"
    try:
        folder.mkdir()
        results_table(["online", "offline"]).to_parquet(folder / "trials.parquet")
        subprocess.run(["mount", "-o", "remount,ro", str(scale)], check=True)
        result = redraw("--study", "labels", "--folder", str(folder))
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.startswith(f"error: cannot write into {folder}") and result.stderr.count("\n") == 1
        whole = redraw("--results", str(tmp_path), "--scale", "tiny")
        assert whole.returncode == 2 and whole.stdout == "", whole.stderr
        assert whole.stderr.startswith(f"error: cannot write into {scale}") and whole.stderr.count("\n") == 1
        assert sorted(p.name for p in scale.iterdir()) == ["labels"]
        assert sorted(p.name for p in folder.iterdir()) == ["trials.parquet"]
    finally:
        subprocess.run(["umount", "--lazy", str(scale)], capture_output=True)


def test_report_names_each_studys_code_version_and_warns_when_they_differ(tmp_path):
    for study, version in (("labels", "aaaa"), ("sampling", "bbbb")):
        folder = tmp_path / "tiny" / study
        folder.mkdir(parents=True)
        values = ["online", "offline"] if study == "labels" else ["hard", "semi-hard", "random", "semi-easy"]
        table = results_table(values, metrics=("svm_map", "knn_top1", "label_nmi", "label_purity",
                                               "labels_changed", "cluster_size_cv", "epoch_time_s"))
        table.assign(code_version=version, torch_version="2.14.1").to_parquet(folder / "trials.parquet")
    result = redraw("--results", str(tmp_path), "--scale", "tiny")
    assert result.returncode == 0, result.stderr
    claims = (tmp_path / "tiny" / "CLAIMS.md").read_text()
    assert "| labels | aaaa | 2.14.1 | 2 | 4 |" in claims
    assert "| sampling | bbbb | 2.14.1 | 2 | 8 |" in claims
    assert "These results come from 2 code versions" in claims


def test_the_readme_headline_is_what_the_committed_claims_say():
    """The README's claims block is generated from results/tiny/claims.csv; edit either by hand and this fails
    (rerun `python -m analysis.report --readme README.md`)."""
    from analysis.report import README_BEGIN, README_END, headline_markdown

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_BEGIN) + len(README_BEGIN):readme.index(README_END)].strip("\n")
    committed = pd.read_csv(ROOT / "results" / "tiny" / "claims.csv")
    assert block == headline_markdown(committed, "tiny").strip("\n")
    assert block.count("\n| ") == 13  # every claim, 12 included


def test_the_readme_block_is_replaced_between_its_markers_only(tmp_path):
    from analysis.report import README_BEGIN, README_END, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_BEGIN}\nold\n{README_END}\n\nrest\n")
    update_readme(readme, "| new |\n")
    assert readme.read_text() == f"# Title\n\n{README_BEGIN}\n| new |\n{README_END}\n\nrest\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no claims block"):
        update_readme(readme, "| new |\n")


def test_every_relative_link_in_the_readme_and_docs_resolves():
    import re

    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_compare_finds_the_largest_difference_and_the_trial_it_comes_from(tmp_path):
    from analysis.compare import compare

    rows = [{"study": "lambda", "value": v, "seed": 0, "epoch": e, "config_hash": f"h{v}", "knn_top1": 50.0 + e,
             "svm_map": 60.0, "linear_top1": 70.0, "loss": 1.0} for v in (0.5, 1.0) for e in (0, 1)]
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    pd.DataFrame(rows).to_parquet(first / "trials.parquet")
    moved = pd.DataFrame(rows)
    moved.loc[(moved["config_hash"] == "h1.0") & (moved["epoch"] == 1), "knn_top1"] += 0.25
    moved = pd.concat([moved, moved.iloc[[0]].assign(config_hash="extra")])
    moved.to_parquet(second / "trials.parquet")
    lines = compare(first, second)
    assert lines[0] == "4 trial x epoch rows in both (1 trials in only one):"
    assert "knn_top1     largest difference 0.25 (trial h1.0, epoch 1)" in lines[1]
    assert "svm_map      largest difference 0 " in lines[2]


def test_a_replica_shows_every_seed_and_the_paired_effect_its_verdict_tests():
    import matplotlib

    matplotlib.use("Agg")
    from analysis.claims import evaluate_claims
    from analysis.figures import draw_study
    from catalogue import STUDIES

    table = results_table(["online", "offline"])  # 2 seeds per arm
    comparisons = evaluate_claims({"labels": table}, [c for c in CLAIMS if c.figure == "fig6a"])
    figure = draw_study(table, STUDIES["labels"], comparisons)
    seeds_axis, effects_axis = figure.axes[0], figure.axes[1]
    points = sum(len(collection.get_offsets()) for collection in seeds_axis.collections)
    assert points >= 2 * 2  # one point per arm and seed (the floor marks come on top)
    assert [tick.get_text().split("\n")[0] for tick in effects_axis.get_yticklabels()] == list(comparisons["comparison"])
    effect_texts = [text.get_text() for text in effects_axis.texts]
    row = comparisons.iloc[0]
    assert f"{row['effect']:+.3g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]" in effect_texts


def test_the_same_results_draw_the_same_bytes(tmp_path):
    """No random jitter: redrawing a replica from the same table writes identical files."""
    import matplotlib

    matplotlib.use("Agg")
    from analysis.figures import plot_study
    from catalogue import STUDIES

    table = results_table(["online", "offline"])
    first, second = (plot_study(table, STUDIES["labels"], tmp_path / name / "fig") for name in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert first.with_suffix(".pdf").read_bytes() == second.with_suffix(".pdf").read_bytes()
