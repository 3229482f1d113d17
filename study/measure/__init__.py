"""Commands that measure rather than run a study: a step's time and where it goes (benchmark, also
`python -m study.benchmark`), the paper's Table 4 (table4), the SVM evaluation's cost (svm_cost), the
GPU smoke run (smoke) and the positive-control search for a scale where InterCLR's effect can show
(positive_control). Nothing else in study/ imports them."""
