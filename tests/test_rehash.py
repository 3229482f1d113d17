import json

import pandas as pd
import pytest

from catalogue import STUDIES
from study import outputs
from study.profiles import PROFILES
from study.rehash import main, rehash
from study.trials import expand
from trainers.config import ConfigError, TrialConfig


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
    # The resolved configs as an older code wrote them: a key since added is missing, an execution key was set.
    (tmp_path / "labels" / "configs.json").write_text(json.dumps(
        {f"old{value}{seed}": {"trial": f"{value}_seed{seed}_old{value}{seed}", "label_mode": value, "threads": 3}
         for value in ("online", "offline") for seed in range(2)}))
    assert rehash(tmp_path / "labels") == 4
    after = pd.read_parquet(tmp_path / "labels" / "trials.parquet")
    today = {(t.value, t.seed): t.config.config_hash() for t in expand(STUDIES["labels"], PROFILES["tiny"], 2)}
    assert [today[(v, s)] for v, s in zip(after["value"], after["seed"])] == after["config_hash"].tolist()
    assert after.drop(columns="config_hash").equals(before.drop(columns="config_hash"))
    assert sorted(outputs.Manifest.load(tmp_path / "labels").config_hashes) == sorted(today.values())
    outputs.check_output(tmp_path / "labels", expand(STUDIES["labels"], PROFILES["tiny"], 2), resume=False)
    configs = json.loads((tmp_path / "labels" / "configs.json").read_text())
    assert sorted(configs) == sorted(today.values())
    for (value, seed), name in today.items():
        assert configs[name]["trial"].endswith(name) and configs[name]["label_mode"] == value
        assert configs[name]["threads"] == 3 and configs[name]["svm_solver"] == "primal"
    # Interrupted after configs.json was written, before the table: a second run keeps the stored keys.
    outputs.write_table(before, tmp_path / "labels")
    assert rehash(tmp_path / "labels") == 4
    assert json.loads((tmp_path / "labels" / "configs.json").read_text()) == configs


def test_rehash_refuses_trials_that_are_not_todays_plan(tmp_path):
    stored_table(tmp_path / "labels", epochs=5)  # the tiny profile trains more
    with pytest.raises(ConfigError, match="not today's plan"):
        rehash(tmp_path / "labels")
    assert main([str(tmp_path / "nothing")]) == 2


def test_rehash_refuses_a_table_that_is_not_one_row_set_per_planned_trial_and_writes_nothing(tmp_path):
    def refused(name, rows):
        folder = tmp_path / name
        stored_table(folder)
        outputs.write_table(rows, folder)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        with pytest.raises(ConfigError, match="rerun the study instead"):
            rehash(folder)
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    rows = stored_table(tmp_path / "rows")
    refused("an arm missing", rows[rows["value"] == "online"])
    split = rows.copy()  # one trial's epochs under two hashes: two runs of it, not one
    split.loc[(split["value"] == "online") & (split["seed"] == 0) & (split["epoch"] > 3), "config_hash"] = "another"
    refused("a trial under two hashes", split)


def test_rehash_refuses_an_unfinished_run_and_writes_nothing(tmp_path):
    stored_table(tmp_path / "labels")
    manifest = outputs.Manifest.load(tmp_path / "labels")
    manifest.status = "unfinished"
    manifest.save(tmp_path / "labels")
    before = {p.name: p.read_bytes() for p in (tmp_path / "labels").iterdir()}
    with pytest.raises(ConfigError, match="finish it with `python -m study.run labels --resume"):
        rehash(tmp_path / "labels")
    assert {p.name: p.read_bytes() for p in (tmp_path / "labels").iterdir()} == before


def positive_control_folder(folder, names):
    """A positive-control folder whose two trial records carry the given (older) names."""
    configs = [{"method": "npidv2", "seed": 0, "epochs": 3}, {"method": "npidv2-interclr", "seed": 0, "epochs": 3}]
    (folder / "trials").mkdir(parents=True)
    for name, config in zip(names, configs):
        (folder / "trials" / f"{name}.json").write_text(json.dumps({"config": config, "rows": [{"epoch": 3}]}))
    pd.DataFrame({"arm": ["base", "inter"], "config_hash": names, "knn_top1": [60.0, 61.0]}).to_csv(
        folder / "search.csv", index=False)
    return [TrialConfig.create(**config).config_hash() for config in configs]


def test_rehash_renames_positive_control_records_to_their_configs_hashes(tmp_path):
    today = positive_control_folder(tmp_path / "pc", ["000000000001", "00000000000a"])
    assert main([str(tmp_path / "pc")]) == 0
    assert sorted(p.stem for p in (tmp_path / "pc" / "trials").iterdir()) == sorted(today)
    search = pd.read_csv(tmp_path / "pc" / "search.csv", dtype={"config_hash": str})
    assert search["config_hash"].tolist() == today and search["knn_top1"].tolist() == [60.0, 61.0]
    assert json.loads((tmp_path / "pc" / "trials" / f"{today[1]}.json").read_text())["config"]["method"] == \
        "npidv2-interclr"
    assert rehash(tmp_path / "pc") == 2  # already today's: nothing moves


def test_rehash_of_records_finishes_an_interrupted_run_and_refuses_unknown_trials(tmp_path):
    today = positive_control_folder(tmp_path / "pc", ["000000000001", "000000000002"])
    # Interrupted after the new copies were written, before search.csv: old and new records side by side.
    for old, new in zip(["000000000001", "000000000002"], today):
        (tmp_path / "pc" / "trials" / f"{new}.json").write_bytes(
            (tmp_path / "pc" / "trials" / f"{old}.json").read_bytes())
    assert rehash(tmp_path / "pc") == 2
    assert sorted(p.stem for p in (tmp_path / "pc" / "trials").iterdir()) == sorted(today)
    pd.DataFrame({"config_hash": ["ffffffffffff"]}).to_csv(tmp_path / "pc" / "search.csv", index=False)
    with pytest.raises(ConfigError, match="without a record"):
        rehash(tmp_path / "pc")
    (tmp_path / "pc" / "search.csv").write_text("")
    with pytest.raises(ConfigError, match="not a positive-control search table"):
        rehash(tmp_path / "pc")


def test_rehash_of_records_never_overwrites_another_record_and_skips_running_trials(tmp_path):
    today = positive_control_folder(tmp_path / "pc", ["000000000001", "000000000002"])
    # A trial rerun under today's hash beside its old record: two different records of one config.
    newer = {"config": {"method": "npidv2", "seed": 0, "epochs": 3}, "rows": [{"epoch": 3, "knn_top1": 70.0}]}
    (tmp_path / "pc" / "trials" / f"{today[0]}.json").write_text(json.dumps(newer))
    (tmp_path / "pc" / "trials" / "000000000009.partial.json").write_text('{"config": ')  # still being written
    before = {p.name: p.read_bytes() for p in (tmp_path / "pc" / "trials").iterdir()}
    with pytest.raises(ConfigError, match="two different trial records"):
        rehash(tmp_path / "pc")
    assert {p.name: p.read_bytes() for p in (tmp_path / "pc" / "trials").iterdir()} == before
    (tmp_path / "pc" / "trials" / "000000000001.json").unlink()
    pd.DataFrame({"config_hash": [today[0], "000000000002"]}).to_csv(tmp_path / "pc" / "search.csv", index=False)
    assert rehash(tmp_path / "pc") == 2
    assert json.loads((tmp_path / "pc" / "trials" / f"{today[0]}.json").read_text()) == newer
    assert (tmp_path / "pc" / "trials" / "000000000009.partial.json").exists()
