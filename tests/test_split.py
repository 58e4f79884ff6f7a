"""``egeunet split``: a seeded random split (the paper's 7:3 protocol) written as the official layout."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from egeunet_deploy.main import main
from egeunet_deploy.model import split as split_module
from egeunet_deploy.model.checkpoint import current_umask
from egeunet_deploy.model.data import DataError, find_pairs, load_split
from egeunet_deploy.model.split import random_split, split_counts


def _stems(root, name):
    return [p.stem for p in find_pairs(root, name)[0]]


def test_split_of_the_real_sample_is_disjoint_complete_and_loadable(sample_dir, tmp_path):
    record = random_split(sample_dir, tmp_path / "s", source_splits=("train", "test"), fractions=(0.6, 0.1, 0.3),
                          seed=3)
    source = set(_stems(sample_dir, "train")) | set(_stems(sample_dir, "test"))
    parts = {name: _stems(tmp_path / "s", name) for name in ("train", "val", "test")}
    assert [len(parts[n]) for n in ("train", "val", "test")] == [58, 10, 28] == list(record["counts"].values())
    assert set().union(*parts.values()) == source and sum(map(len, parts.values())) == len(source)
    assert parts == record["stems"] == json.loads((tmp_path / "s" / "split.json").read_text())["stems"]
    mode = (tmp_path / "s").stat().st_mode & 0o777
    assert not record["val_is_test"] and mode == 0o777 & ~current_umask()  # not mkdtemp's 0700
    loaded = load_split(tmp_path / "s", "val")  # links decode like the files they point at
    assert loaded.images.shape == (10, 256, 256, 3) and loaded.masks.max() == 1


def test_same_seed_same_split_other_seed_other_split(sample_dir, tmp_path):
    a = random_split(sample_dir, tmp_path / "a", source_splits=("train", "test"), seed=7)
    b = random_split(sample_dir, tmp_path / "b", source_splits=("train", "test"), seed=7)
    c = random_split(sample_dir, tmp_path / "c", source_splits=("train", "test"), seed=8)
    assert a["stems"] == b["stems"] and a["stems"]["test"] != c["stems"]["test"]


def test_no_validation_share_makes_val_the_test_set_and_says_so(sample_dir, tmp_path, capsys):
    code = main(["split", "--data", str(sample_dir), "--out", str(tmp_path / "s"), "--from", "train,test",
                 "--copy"])
    out = capsys.readouterr().out
    assert code == 0 and "val same as test" in out and "optimistic" in out
    assert _stems(tmp_path / "s", "val") == _stems(tmp_path / "s", "test")
    assert len(_stems(tmp_path / "s", "test")) == 96 - round(96 * 0.7)
    assert all(not p.is_symlink() for p in (tmp_path / "s" / "train" / "images").iterdir())  # --copy copies


def test_split_counts_round_train_and_val_and_give_test_the_rest():
    assert split_counts(2148, (0.7, 0.0, 0.3)) == (1504, 0, 644)
    assert split_counts(10, (7, 1, 2)) == (7, 1, 2)
    with pytest.raises(ValueError, match="test > 0"):
        split_counts(10, (1.0, 0.0, 0.0))
    with pytest.raises(DataError, match="too few"):
        split_counts(2, (0.5, 0.25, 0.25))


@pytest.mark.parametrize("case", ["exists", "collision", "bad_fractions"])
def test_bad_requests_exit_2_and_write_nothing(sample_dir, tmp_path, capsys, case):
    out = tmp_path / "s"
    args = ["split", "--data", str(sample_dir), "--out", str(out), "--from", "train,test"]
    if case == "exists":
        out.mkdir()
        expected = "already exists"
    elif case == "collision":  # the same stem in two source splits
        for split in ("train", "val"):
            for kind, image in (("images", Image.new("RGB", (8, 8))), ("masks", Image.new("L", (8, 8)))):
                (tmp_path / "d" / split / kind).mkdir(parents=True)
                image.save(tmp_path / "d" / split / kind / "ISIC_0000001.png")
        args[2], args[-1] = str(tmp_path / "d"), "train,val"
        expected = "more than one source split"
    else:
        args += ["--fractions", "0.7,0.3"]
        expected = "fractions"
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and expected in err
    assert out.exists() == (case == "exists") and not list(tmp_path.glob(".s.*"))


def test_an_interrupted_split_leaves_no_folder_behind(sample_dir, tmp_path, monkeypatch):
    placed = []

    def place_then_interrupt(src, dst, copy):
        if len(placed) == 20:
            raise KeyboardInterrupt
        placed.append(dst)
        dst.symlink_to(src)

    monkeypatch.setattr(split_module, "_place", place_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        random_split(sample_dir, tmp_path / "s", source_splits=("train", "test"))
    assert len(placed) == 20 and list(tmp_path.iterdir()) == []
