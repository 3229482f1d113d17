"""The static HTML report that `analysis.report` writes beside CLAIMS.md: every page links only to files
that exist, escapes what the results files say, and renders in headless Chromium with every image
loaded and no console message."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_report import results_table

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert('from RUN.md')</script>"
# Appended to a copy of a page: after load, every image's state goes into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: images.length, broken: broken, h1: document.querySelectorAll("h1").length});
  document.body.appendChild(out);
});
</script>"""


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        for key in ("src", "href"):
            if key in attrs:
                self.targets.append(attrs[key])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A report over two studies, one of whose RUN.md holds markup and whose folder has configs.json."""
    results = tmp_path_factory.mktemp("results")
    methods = results / "tiny" / "methods"
    methods.mkdir(parents=True)
    results_table(["npidv2", "npidv2-interclr"], metrics=("linear_top1", "svm_map", "knn_top1")).to_parquet(
        methods / "trials.parquet")
    labels = results / "tiny" / "labels"
    labels.mkdir()
    table = results_table(["online", "offline"])
    table.to_parquet(labels / "trials.parquet")
    (labels / "RUN.md").write_text(f"# labels\n\n- command: `python -m study.run labels {HOSTILE}`\n"
                                   "- code version: abc123\n- wall time: 12 s\n")
    (labels / "configs.json").write_text(json.dumps(
        {f"{v}-{s}": {"label_mode": v, "seed": s, "lr": 0.03} for v in ("online", "offline") for s in range(2)}))
    result = subprocess.run([sys.executable, "-m", "analysis.report", "--results", str(results), "--scale", "tiny"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return results / "tiny"


def pages(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.html"))


def test_the_report_writes_an_index_a_page_per_study_and_the_claims_page(site):
    assert [p.name for p in pages(site)] == ["claims.html", "index.html", "study-labels.html", "study-methods.html"]
    index = (site / "index.html").read_text()
    assert 'href="study-labels.html"' in index and 'href="study-methods.html"' in index and "12 s" in index
    labels = (site / "study-labels.html").read_text()
    assert "label_mode" in labels and "configs.json" in labels  # the resolved settings that differ by arm
    assert "lr" not in labels.split("<h2>Arms</h2>")[1].split("<h2>Trials")[0]  # the same in every arm
    assert "fig6a.png" in labels and "health" not in labels  # no health columns, no health figure


def test_each_study_shows_its_own_figures_counts_and_verdicts(site):
    index = (site / "index.html").read_text()
    rows = {name: next(row for row in index.split("<tr>") if f'href="study-{name}.html"' in row)
            for name in ("labels", "methods")}
    assert "claim 1 " in rows["labels"] and "claim 13 " not in rows["labels"]
    assert "claim 13 " in rows["methods"] and "claim 1 " not in rows["methods"]
    assert all("<td>2</td>" in row for row in rows.values())  # seeds 0 and 1
    # Counted by claim, not by comparison: the 12 claims tested on seeds; labels' arms are equal in every
    # metric, so its claim 1 is negligible, and every other claim lacks a study.
    assert "Claims tested on seeds: missing 11, negligible 1 " in index
    for name in ("labels", "methods"):
        page = (site / f"study-{name}.html").read_text()
        links = Links()
        links.feed(page)
        figures = [target for target in links.targets if target.endswith(".png")]
        assert figures and all(target.startswith(f"{name}/") for target in figures), (name, figures)
        assert "<p>4 trials, 12 rows.</p>" in page  # 2 arms x 2 seeds, epochs 0-2


def test_every_link_and_image_is_a_file_of_the_results_folder_and_no_page_runs_a_script(site):
    for path in pages(site):
        links = Links()
        links.feed(path.read_text())
        assert links.scripts == 0, path.name
        for target in links.targets:
            assert "://" not in target and not target.startswith("/"), (path.name, target)
            assert (site / target).resolve().is_file(), (path.name, target)


def test_what_a_results_file_says_is_shown_as_text(site):
    labels = (site / "study-labels.html").read_text()
    assert HOSTILE not in labels
    assert "&lt;script&gt;alert(&#x27;from RUN.md&#x27;)&lt;/script&gt;" in labels


def render(page: Path, browser: str, profile: Path) -> tuple[dict, list[str]]:
    """(the probe's report, the console lines) of a copy of `page` with PROBE appended, in headless Chromium."""
    probed = page.resolve().with_name(page.stem + ".probe.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                 "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                                 probed.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        probed.unlink()
    dom = result.stdout
    assert 'id="probe"' in dom, result.stderr[-2000:]
    report = json.loads(dom.split('id="probe">')[1].split("</pre>")[0].replace("&quot;", '"'))
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return report, console


BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


@pytest.mark.skipif(BROWSER is None, reason="headless Chromium not found: `apt-get install chromium` "
                                            "(make test installs it where apt is available)")
def test_every_page_renders_in_chromium_with_every_image_loaded_and_a_quiet_console(site, tmp_path):
    for page in pages(site):
        report, console = render(page, BROWSER, tmp_path / "profile")
        assert report["h1"] == 1 and report["broken"] == [], (page.name, report)
        assert console == [], (page.name, console)
    assert render(site / "index.html", BROWSER, tmp_path / "profile")[0]["images"] >= 3  # forest and two replicas
    # The probe sees a missing image: remove one and the study page reports it.
    figure = site / "labels" / "fig6a.png"
    kept = figure.read_bytes()
    figure.unlink()
    try:
        report, _ = render(site / "study-labels.html", BROWSER, tmp_path / "profile")
    finally:
        figure.write_bytes(kept)
    assert report["broken"] == ["labels/fig6a.png"]
