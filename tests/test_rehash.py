import pandas as pd
import pytest

from catalogue import STUDIES
from study import outputs
from study.profiles import PROFILES
from study.rehash import main, rehash
from study.trials import expand
from trainers.config import ConfigError


def stored_table(folder, seeds=2, epochs=PROFILES["tiny"].settings["epochs"]):
    """A labels-study table as an older hash definition left it: every trial under a made-up hash."""
    rows = [{"study": "labels", "factor": "label_mode", "value": value, "seed": seed, "config_hash": f"old{value}{seed}",
             "scale": "tiny", "code_version": "abc", "epoch": epoch, "knn_top1": 50.0 + epoch + seed}
            for value in ("online", "offline") for seed in range(seeds) for epoch in range(epochs + 1)]
    folder.mkdir(parents=True)
    outputs.write_table(pd.DataFrame(rows), folder)
    outputs.Manifest("labels", "tiny", "/nowhere", sorted({r["config_hash"] for r in rows}), "finished", "cmd",
                    "abc").save(folder)
    return pd.DataFrame(rows)


def test_rehash_gives_todays_hashes_and_keeps_the_metrics(tmp_path):
    before = stored_table(tmp_path / "labels")
    assert rehash(tmp_path / "labels") == 4
    after = pd.read_parquet(tmp_path / "labels" / "trials.parquet")
    today = {(t.value, t.seed): t.config.config_hash() for t in expand(STUDIES["labels"], PROFILES["tiny"], 2)}
    assert [today[(v, s)] for v, s in zip(after["value"], after["seed"])] == after["config_hash"].tolist()
    assert after.drop(columns="config_hash").equals(before.drop(columns="config_hash"))
    assert sorted(outputs.Manifest.load(tmp_path / "labels").config_hashes) == sorted(today.values())
    outputs.check_output(tmp_path / "labels", expand(STUDIES["labels"], PROFILES["tiny"], 2), resume=False)


def test_rehash_refuses_trials_that_are_not_todays_plan(tmp_path):
    stored_table(tmp_path / "labels", epochs=5)  # the tiny profile trains more
    with pytest.raises(ConfigError, match="not today's plan"):
        rehash(tmp_path / "labels")
    assert main([str(tmp_path / "nothing")]) == 2
