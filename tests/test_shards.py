"""A collection cut into shards (`collect --shard i/n`, one per Slurm array task) and merged into one that LPO
trains on (adaptive_decoder.lpo.shards), with the refusals that keep parts of different collections apart."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from adaptive_decoder import cli
from adaptive_decoder.lpo.shards import merge_collections, parse_shard, shard_prompts
from adaptive_decoder.lpo.store import CollectionMismatchError, read_collection

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "lpo" / "collect_tiny.yaml"


def collect(model, out, *flags):
    assert cli.main(["collect", "--config", str(TINY), "--base_model", str(model), "--output_dir", str(out),
                     "--report", "false", *flags]) == 0


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    for i in range(2):
        collect(tiny_model_dir, d / f"part-{i}", "--shard", f"{i}/2")
    return d


def test_parse_and_split():
    prompts = [{"id": str(i)} for i in range(7)]
    cut = [shard_prompts(prompts, f"{i}/3") for i in range(3)]
    assert [[p["id"] for p in c] for c in cut] == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert shard_prompts(prompts, None) == prompts
    for bad, msg in (("2/2", "need 0 <= INDEX < COUNT"), ("1-2", "must be 'INDEX/COUNT'"), ("a/b", "INDEX/COUNT")):
        with pytest.raises(ValueError, match=msg):
            parse_shard(bad)


def test_merged_shards_hold_every_prompt_once_and_train(parts, tiny_model_dir, tmp_path):
    m0, _ = read_collection(parts / "part-0")
    m1, _ = read_collection(parts / "part-1")
    assert m0["prompts_expected"] == 5 and m1["prompts_expected"] == 5 and not set(m0["done"]) & set(m1["done"])
    merged = merge_collections(tmp_path / "merged", [parts / "part-1", parts / "part-0"])
    m, records = read_collection(merged)
    assert sorted(m["done"]) == sorted(m0["done"] + m1["done"]) and len(m["done"]) == 10  # collect_tiny's 6 + 4
    assert len(records) == 10 * m["settings"]["num_samples"] and m["settings"]["shard"] is None
    assert [p["shard"] for p in m["merged_from"]] == ["1/2", "0/2"]
    head = yaml.safe_load(TINY.read_text())["head"]
    assert cli.main(["train", "--config", str(REPO / "configs" / "lpo" / "train_tiny.yaml"), "--collection_dir",
                     str(merged), "--synthetic_pairs", "0", "--head", json.dumps(head), "--output_dir",
                     str(tmp_path / "train")]) == 0
    assert (tmp_path / "train" / "head" / "model.safetensors").exists()


def test_parts_of_different_collections_are_refused_by_name(parts, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"missing \[1\]"):
        merge_collections(tmp_path / "a", [parts / "part-0"])
    with pytest.raises(ValueError, match=r"given twice \[0\]"):
        merge_collections(tmp_path / "b", [parts / "part-0", parts / "part-0"])
    other = tmp_path / "other-1"
    collect(tiny_model_dir, other, "--shard", "1/2", "--num_samples", "3")
    with pytest.raises(ValueError, match="num_samples") as err:
        merge_collections(tmp_path / "c", [parts / "part-0", other])
    assert "\n" not in str(err.value)
    unfinished = tmp_path / "unfinished-1"
    shutil.copytree(parts / "part-1", unfinished)
    man = json.loads((unfinished / "manifest.json").read_text())
    man["prompts_expected"] = 9
    (unfinished / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="is not finished: 5 of 9 prompts"):
        merge_collections(tmp_path / "d", [parts / "part-0", unfinished])
    assert not (tmp_path / "d").exists()
    # a part resumed as another shard is another collection
    with pytest.raises(CollectionMismatchError, match="shard"):
        collect(tiny_model_dir, parts / "part-0", "--shard", "1/2")


def test_merge_command_line(parts, tmp_path, capsys):
    cli.main(["merge", str(tmp_path / "m"), str(parts / "part-0"), str(parts / "part-1")])
    assert (tmp_path / "m" / "manifest.json").exists()
    with pytest.raises(SystemExit) as e:
        cli.main(["merge", str(tmp_path / "n"), str(parts / "part-0")])
    assert e.value.code == 2 and "missing [1]" in capsys.readouterr().err
