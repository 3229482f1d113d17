"""The studies and the claims they test, as plain data: standard library only, so that analysis/ and
the notebooks can read them without torch, Ray or the trainers.

A study expands to one trial per (factor value, seed). Precedence, lowest first: TrialConfig
defaults, the scale profile, the study's fixed settings, the user's --set, then the factor value
and seed of the trial.

Each claim's text lives only in CLAIMS; a study's claims are those whose comparisons name it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Times:
    """A setting relative to the scale profile's own value of the same key, e.g. Times(4) negatives."""
    multiple: float

    def resolve(self, profile_value):
        return type(profile_value)(round(self.multiple * profile_value))


@dataclass(frozen=True)
class StudySpec:
    name: str
    paper: str
    figure: str  # the replica's file stem, e.g. "fig6b"
    factor: str  # the TrialConfig key the study varies
    values: tuple  # Times(m) values are multiples of the profile's setting; results record m
    metric: str  # the paper's metric stand-in, shown as the figure's main panel
    fixed: dict = field(default_factory=dict)

    @property
    def levels(self) -> tuple:
        """The factor values as results record them (a Times value by its multiple)."""
        return tuple(recorded(value) for value in self.values)

    @property
    def factors(self) -> tuple[str, ...]:
        """The keys one value sets: one, or two for a two-factor sweep (factor "KEY1 x KEY2")."""
        return tuple(self.factor.split(" x "))

    def settings_of(self, value) -> dict:
        """The config keys a factor value sets: {factor: value}, or both keys of a two-factor pair."""
        return dict(zip(self.factors, value)) if isinstance(value, tuple) else {self.factor: value}

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "paper": self.paper, "figure": self.figure, "factor": self.factor,
                           "values": [list(v) if isinstance(v, tuple) else v for v in self.values],
                           "metric": self.metric, "fixed": self.fixed})


def recorded(value):
    """A factor value as results record it: a Times value by its multiple, a two-factor pair as "a, b"."""
    if isinstance(value, tuple):
        return ", ".join(str(part) for part in value)
    return value.multiple if isinstance(value, Times) else value


# An ad-hoc sweep (`study.run --sweep KEY=a,b,c`): a study not in the catalogue, named sweep-KEY, whose
# spec is kept in its output folder (SWEEP_FILE) so that analysis reads it as it reads a registered one.
SWEEP_PREFIX = "sweep-"
SWEEP_FILE = "study.json"


def sweep_study(assignments: list[str], metric: str = "svm_map") -> StudySpec:
    """One factor, or a two-factor grid, from KEY=a,b,c assignments; values read as int, float or text.
    Raises ValueError naming the mistake."""
    if not 1 <= len(assignments) <= 2:
        raise ValueError(f"give one or two --sweep KEY=a,b,... (got {len(assignments)})")
    keys, grids = [], []
    for text in assignments:
        key, _, values = text.partition("=")
        parsed = [plain_value(part.strip()) for part in values.split(",") if part.strip()]
        if not key.strip() or len(parsed) < 2 or len(set(map(str, parsed))) != len(parsed):
            raise ValueError(f"--sweep {text!r}: give KEY=a,b,... with at least two different values")
        keys.append(key.strip())
        grids.append(parsed)
    if len(set(keys)) != len(keys):
        raise ValueError(f"--sweep names {keys[0]} twice; give two different keys")
    values = tuple(grids[0]) if len(keys) == 1 else tuple((a, b) for a in grids[0] for b in grids[1])
    name = SWEEP_PREFIX + "-".join(keys)
    return StudySpec(name=name, paper="sweep", figure=name, factor=" x ".join(keys), values=values, metric=metric)


def plain_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def study_spec(name: str, folder=None) -> StudySpec:
    """A registered study by name, or the sweep whose spec its output folder keeps; raises KeyError."""
    if name in STUDIES:
        return STUDIES[name]
    if folder is not None and name.startswith(SWEEP_PREFIX):
        from pathlib import Path

        path = Path(folder) / SWEEP_FILE
        try:
            data = json.loads(path.read_text())
            values = tuple(tuple(v) if isinstance(v, list) else v for v in data["values"])
            spec = StudySpec(name=data["name"], paper="sweep", figure=data["figure"], factor=data["factor"],
                             values=values, metric=data["metric"], fixed=dict(data.get("fixed", {})))
        except (OSError, ValueError, KeyError, TypeError):
            raise KeyError(f"{path} does not describe sweep {name}; rerun it with python -m study.run --sweep") from None
        if spec.name == name and spec.figure == name:
            return spec
    raise KeyError(f"unknown study {name!r}")


# Paper 5.3.1: the three main aspects use online labels and zero margins unless varied; lambda is
# not restated there, so it stays at the final recipe's 0.75 where the study does not vary it.
MAIN_ASPECTS = {"method": "npidv2-interclr", "label_mode": "online", "intra_margin": 0.0, "inter_margin": 0.0,
                "loss_lambda": 0.75}
# The final recipe: online labels, semi-hard negatives, inter margin -0.5, lambda 0.75, 10x clusters,
# and 16,384 negatives, i.e. 4x the 4,096 of the ablations (here 4x the profile's K).
FINAL_RECIPE = {"method": "npidv2-interclr", "label_mode": "online", "negative_sampling": "semi-hard",
                "intra_margin": 0.0, "inter_margin": -0.5, "loss_lambda": 0.75, "clusters_per_class": 10.0,
                "num_negatives": Times(4)}

STUDIES = {s.name: s for s in [
    # Claim 1 reads the kNN curve (the epoch each arm reaches a level), so this study evaluates twice as
    # often as the profile's eval_every.
    StudySpec(
        name="labels", paper="InterCLR", figure="fig6a", factor="label_mode", values=("online", "offline"),
        metric="svm_map",
        fixed={**MAIN_ASPECTS, "negative_sampling": "random", "offline_every": 1, "eval_every": Times(0.5)}),
    StudySpec(
        name="sampling", paper="InterCLR", figure="fig6b", factor="negative_sampling",
        values=("hard", "semi-hard", "random", "semi-easy"), metric="svm_map", fixed=MAIN_ASPECTS),
    StudySpec(
        name="margin-intra", paper="InterCLR", figure="fig7a", factor="intra_margin",
        values=(-0.5, -0.25, 0.0, 0.25, 0.5), metric="linear_top1",
        fixed={**MAIN_ASPECTS, "negative_sampling": "semi-hard"}),
    StudySpec(
        name="margin-inter", paper="InterCLR", figure="fig7b", factor="inter_margin",
        values=(-1.0, -0.5, -0.25, 0.0, 0.25, 0.5), metric="linear_top1",
        fixed={**MAIN_ASPECTS, "negative_sampling": "semi-hard"}),
    StudySpec(
        name="lambda", paper="InterCLR", figure="fig8", factor="loss_lambda", values=(0.0, 0.25, 0.5, 0.75, 1.0),
        metric="svm_map", fixed={**MAIN_ASPECTS, "negative_sampling": "random"}),
    StudySpec(
        name="clusters", paper="InterCLR", figure="fig9a", factor="clusters_per_class", values=(1.0, 5.0, 10.0, 20.0),
        metric="svm_map", fixed=FINAL_RECIPE),
    StudySpec(
        name="negatives", paper="InterCLR", figure="fig9b", factor="num_negatives",
        values=(Times(1), Times(4), Times(16)), metric="svm_map", fixed=FINAL_RECIPE),
    # Table 1: each base method alone and with the inter-image branch. Only the 4x negatives are set
    # here; the rest of the final recipe is each -interclr method's defaults.
    StudySpec(
        name="methods", paper="InterCLR", figure="table1", factor="method",
        values=("npidv2", "npidv2-interclr", "mocov2", "mocov2-interclr", "byol", "byol-interclr"),
        metric="linear_top1", fixed={"num_negatives": Times(4)}),
    # Truncated triplet: negatives are the other m = batch - 1 targets of the batch; "median" is rank m/2.
    StudySpec(
        name="rank-k", paper="Truncated triplet", figure="table8", factor="deputy",
        values=("rank-1", "rank-5", "median", "smoothed-5"), metric="linear_top1",
        fixed={"method": "truncated-triplet"}),
    StudySpec(
        name="triplet-margin", paper="Truncated triplet", figure="table7", factor="triplet_margin",
        values=(-0.3, -1.2, -100.0), metric="linear_top1", fixed={"method": "truncated-triplet", "deputy": "median"}),
    StudySpec(
        # Its figure shows the per-query share that claim 8 tests: Table 6's Pr(Omega | A) is 1 in every batch
        # with 10 classes (CLAIMS.md's Table 6 keeps it beside the paper's values).
        name="overclustering", paper="Truncated triplet", figure="table6", factor="deputy",
        values=("rank-1", "rank-5", "median"), metric="deputy_same_class_rate", fixed={"method": "truncated-triplet"}),
]}


# `--seeds auto --max-seeds N` adds seeds in rounds planned before any data: FIRST_ROUND seeds, then
# ROUND more per round, up to N; analysis.sequential judges each round, study.rounds runs them.
FIRST_ROUND, ROUND = 3, 2


def seed_rounds(max_seeds: int) -> list[int]:
    """The seed counts of the rounds (the looks of the sequential analysis), ending at max_seeds."""
    return [*range(FIRST_ROUND, max_seeds, ROUND), max_seeds]


@dataclass(frozen=True)
class Comparison:
    """A pre-registered comparison of metric(higher) with metric(lower) across seeds; with lower=None,
    of metric(higher) with 0 (one sample).

    form says what the paper's sentence needs (analysis.stats tests each form):
      "superiority"      higher > lower
      "non-inferiority"  higher >= lower: not worse by margin or more
      "non-superiority"  higher is not better than lower: not better by margin or more
      "equivalence"      higher ~ lower: within margin either way (the paper's "marginal")

    margin, the smallest effect of interest, comes from one rule (MARGIN_RULE) for the quality metrics:
    paper_gap is the paper's own difference for this comparison in its metric's points (None: the
    paper prints no value, FIGURE_GAP stands in). For the other metrics `margin` is fixed here.

    metric is a result column read at each trial's last epoch, or with a prefix: "mean:COLUMN"
    averages it over epochs 1..; "rise:COLUMN" is last minus epoch 0; "fall:COLUMN" epoch 0 minus last;
    "reach:COLUMN" is the first epoch at which COLUMN reaches 95% of the study's best final mean over
    seeds (a trial that never does counts as one epoch past its last).
    """
    study: str
    higher: object
    lower: object | None
    metric: str
    margin: float | None = None
    form: str = "superiority"
    paper_gap: float | None = None


@dataclass(frozen=True)
class Gate:
    """A health signal a claim's mechanism needs: `column` at the last epoch, averaged over seeds per arm,
    for each arm of a comparison that records it; the worst arm must lie on the bound's side (at most
    `bound` when `at_most`, else at least). bound None: shown beside the verdict, never gating."""
    column: str
    bound: float | None
    at_most: bool
    needs: str  # what the bound says in words, e.g. "the inter branch learns"


@dataclass(frozen=True)
class Claim:
    number: int
    text: str
    figure: str
    comparisons: tuple[Comparison, ...]
    gates: tuple[Gate, ...] = ()


# Fixed smallest effects of interest for the metrics that are not representation quality: one epoch,
# two points of a share, a tenth of a second per tiny epoch.
EPOCHS, SHARE, SECONDS = 1.0, 0.02, 0.1
QUALITY_METRICS = ("linear_top1", "svm_map", "knn_top1")

# The margin rule, registered before the runs it judges (commit named in CLAIMS.md). A quality
# comparison's smallest effect of interest is the paper's gap as a share of the paper's trained gain,
# applied to this scale's trained gain (the compared arms' mean rise over the epoch-0 floor), and never
# below what SEED_BUDGET seeds per arm resolve (80% power, one-sided 2.5%, paired, from the study's
# residual SD). When the scaled gap is below that resolution the paper's effect cannot be seen at
# this scale with this budget: the comparison is "not testable at this scale".
MARGIN_RULE = ("margin = max(paper gap / paper trained gain x this scale's trained gain, the effect "
               f"{{budget}} seeds per arm resolve); not testable when the first is below the second")
SEED_BUDGET = 15  # the largest seed budget this harness has run per arm (negatives at tiny)
REGISTERED_IN = "b9b22a1"  # the commit that registered this rule, the gates and the margins, before the reruns
# The paper's trained gain over a random network, per paper and metric: NPIDv2's ResNet-50 reaches
# 64.6 ImageNet linear top-1 against ~13.6 for a random ResNet-50 (~51 points). Neither paper prints a
# random network's VOC07 SVM mAP or kNN, so the linear gain stands in for them. Tables 7 and 8 of the
# truncated triplet (20 epochs, 1-epoch linear evaluation) reach 28.3-30.0: ~16.4 over the same floor.
PAPER_GAINS = {("InterCLR", "linear_top1"): 51.0, ("InterCLR", "svm_map"): 51.0, ("InterCLR", "knn_top1"): 51.0,
               ("Truncated triplet", "linear_top1"): 16.4}
# InterCLR's figures 6-9 print no values; their differences are read as 1 point, the size of the
# branch's own effects in Table 1 (+0.5 to +2.9 linear, +1.1 to +1.4 SVM).
FIGURE_GAP = 1.0

# What the inter-image branch needs before any of its claims can be read: its loss well below the
# loss of a branch that tells no candidate apart (log(1 + K e^(m/tau)); 2 for BYOL's regression).
INTER_LEARNS = Gate("loss_inter_to_chance", 0.75, True, "the inter branch learns: loss at most 75% of chance")
# InterCLR's negatives must be mostly other classes (on ImageNet a 10% semi-hard pool holds ~128k images
# against ~1.3k per class); a pool that is one class contrasts the query with its own class.
NEGATIVES_OTHER_CLASS = Gate("inter_negatives_same_class", 0.5, True,
                             "sampled negatives are mostly of other classes: same-class share at most 0.5")
LABELS_SHOWN = Gate("label_purity", None, True, "pseudo-label purity")

# The papers' claims in their words, each comparison once; analysis.claims holds the verdict rule.
CLAIMS = (
    Claim(1, "Online labels end higher than offline labels, and reach a kNN level sooner.", "fig6a",
          (Comparison("labels", "online", "offline", "svm_map"),
           Comparison("labels", "offline", "online", "reach:knn_top1", EPOCHS)),
          (INTER_LEARNS, LABELS_SHOWN)),
    Claim(2, "Semi-hard negatives beat every other strategy; random beats hard.", "fig6b",
          (*(Comparison("sampling", "semi-hard", other, "svm_map") for other in ("hard", "random", "semi-easy")),
           Comparison("sampling", "random", "hard", "svm_map")),
          (INTER_LEARNS, NEGATIVES_OTHER_CLASS)),
    Claim(3, "For the intra branch a positive margin (+0.25, +0.5) beats 0, and 0 beats a negative one (-0.25, "
             "-0.5).", "fig7a",
          (Comparison("margin-intra", 0.25, 0.0, "linear_top1"), Comparison("margin-intra", 0.5, 0.0, "linear_top1"),
           Comparison("margin-intra", 0.0, -0.25, "linear_top1"), Comparison("margin-intra", 0.0, -0.5, "linear_top1")),
          (INTER_LEARNS,)),
    # "Best near -0.5": better than 0 and the positive margins, at least as good as its neighbours.
    Claim(4, "For the inter branch -0.5 is best: it beats 0, +0.25 and +0.5 and is at least as good as its "
             "neighbours -1 and -0.25; +0.25 is not better than 0; +0.5 is worse than 0.", "fig7b",
          (*(Comparison("margin-inter", -0.5, other, "linear_top1") for other in (0.0, 0.25, 0.5)),
           *(Comparison("margin-inter", -0.5, other, "linear_top1", form="non-inferiority") for other in (-1.0, -0.25)),
           Comparison("margin-inter", 0.25, 0.0, "linear_top1", form="non-superiority"),
           Comparison("margin-inter", 0.0, 0.5, "linear_top1")),
          (INTER_LEARNS,)),
    Claim(5, "lambda 0.75 beats 1 (intra alone) and 0 (inter alone), and is at least as good as 0.5.", "fig8",
          (Comparison("lambda", 0.75, 1.0, "svm_map"),
           Comparison("lambda", 0.75, 0.0, "svm_map"),
           Comparison("lambda", 0.75, 0.5, "svm_map", form="non-inferiority")),
          (INTER_LEARNS,)),
    Claim(6, "10x clusters beat 1x; 20x is equivalent to 10x (saturation).", "fig9a",
          (Comparison("clusters", 10.0, 1.0, "svm_map"),
           Comparison("clusters", 20.0, 10.0, "svm_map", form="equivalence")),
          (INTER_LEARNS, LABELS_SHOWN)),
    Claim(7, "4x negatives bring marginal benefits over 1x (within the margin); 16x is worse than 4x.", "fig9b",
          (Comparison("negatives", 4, 1, "svm_map", form="equivalence"),
           Comparison("negatives", 4, 16, "svm_map")),
          (INTER_LEARNS,)),
    # Pr(Omega) is reported beside it (Table 6): with 10 classes and 127 negatives some query's deputy
    # shares its class in every batch, so Omega is certain at every k; the per-query share can move.
    Claim(8, "The share of queries whose deputy has their class falls as k grows; with k=1 it rises during "
             "training, with k=m/2 it falls.", "table6",
          (Comparison("overclustering", "rank-1", "rank-5", "deputy_same_class_rate", SHARE),
           Comparison("overclustering", "rank-5", "median", "deputy_same_class_rate", SHARE),
           Comparison("overclustering", "rank-1", None, "rise:deputy_same_class_rate", SHARE),
           Comparison("overclustering", "median", None, "fall:deputy_same_class_rate", SHARE))),
    # The share of queries held at C shows whether an arm still learns: the paper's -0.3 arm did (28.3).
    Claim(9, "Margin C = -100 and -1.2 are better than -0.3.", "table7",
          (Comparison("triplet-margin", -100.0, -0.3, "linear_top1", paper_gap=1.7),
           Comparison("triplet-margin", -1.2, -0.3, "linear_top1", paper_gap=1.5)),
          (Gate("triplet_clamped_share", None, True, "share of queries whose loss is held at C"),)),
    # smoothed-5 is the reference code's default deputy; Table 8 prints no value for it.
    Claim(10, "rank-m/2 and rank-5 deputies beat rank-1, and so does the smoothed rank-5 deputy.", "table8",
          (Comparison("rank-k", "median", "rank-1", "linear_top1", paper_gap=1.1),
           Comparison("rank-k", "rank-5", "rank-1", "linear_top1", paper_gap=0.6),
           Comparison("rank-k", "smoothed-5", "rank-1", "linear_top1"))),
    Claim(11, "Online label maintenance costs less time per epoch than offline (paper Table 4: about 1.3x).",
          "table4", (Comparison("labels", "offline", "online", "mean:epoch_time_s", SECONDS),)),
    # svm_map stands in for the paper's VOC07 SVM mAP column; the gaps are Table 1's.
    Claim(13, "The inter-image branch improves each base method (Table 1).", "table1",
          tuple(Comparison("methods", f"{base}-interclr", base, metric, paper_gap=gap)
                for metric, gaps in (("linear_top1", (1.1, 0.5, 2.9)), ("svm_map", (1.1, 1.1, 1.4)))
                for base, gap in zip(("npidv2", "mocov2", "byol"), gaps)),
          (INTER_LEARNS,)),
)
