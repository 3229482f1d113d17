"""`python -m study.measure.benchmark` at toy size: it runs every variant through `Trial.step` and its split of
the intra + inter step is a split (no timing is asserted: benchmarks are scripts)."""

import re

from study.measure.benchmark import main

# On the CPU: on a GPU the toy product takes microseconds and its share would round to 0%.
TOY = ["--rounds", "1", "--steps", "2", "--set", "device=cpu", "--set", "dataset=synthetic", "--set",
       "image_size=16", "--set", "train_subset=0", "--set", "test_subset=0", "--set", "num_negatives=8", "--set",
       "min_cluster_size=4"]


def test_the_benchmark_times_every_variant_and_splits_the_inter_step_into_parts_that_add_up(capsys):
    assert main(TOY) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"median step +\d+\.\d ms", out)) == 3, out
    split = out.split("step split: ")[1].splitlines()[0]
    shares = {name: int(share) for name, share in re.findall(r"(?:^|, |; )(.+?) (\d+)%", split)}
    parts = ["samplers", "bank and labels", "rest (augmentation, networks, optimiser)"]
    assert abs(sum(shares[name] for name in parts) - 100) <= 1, shares  # three shares, each rounded
    similarity = shares["the samplers' similarity product (B x N, no implementation avoids it)"]
    assert 0 < similarity <= shares["samplers"], shares  # the product is inside the samplers, and never free
    intra, inter = (float(m) for m in re.findall(r"median step +(\d+\.\d) ms", out)[:2])
    added = float(re.search(r"the inter branch adds (-?\d+\.\d) ms", out).group(1))
    assert abs(added - (inter - intra)) <= 0.11, out
