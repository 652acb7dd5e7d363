"""Hold-out and k-fold splits, their JSON files, and reuse of an existing file."""

import json
import random
import re

import pytest

from pneumoseg.data.splits import (
    holdout_split,
    kfold_split,
    load_or_create_splits,
    load_splits,
    save_splits,
)
from pneumoseg.errors import PneumosegError

N_IMAGES = 600
IDS = [f"1.2.276.0.7230010.3.1.4.{i}" for i in range(N_IMAGES)]
POSITIVE = [i % 9 in (0, 4) for i in range(N_IMAGES)]  # 134 positive: SIIM's rate, ~22 %
N_POSITIVE = sum(POSITIVE)
LABEL = dict(zip(IDS, POSITIVE))


def n_positive(ids):
    return sum(LABEL[i] for i in ids)


def assert_rate_within_one_image(ids):
    expected = len(ids) * N_POSITIVE / N_IMAGES
    assert abs(n_positive(ids) - expected) <= 1


def test_holdout_is_five_to_one_stratified_disjoint_and_covering():
    [fold] = holdout_split(IDS, POSITIVE)
    train, val = fold["train"], fold["val"]
    assert (len(train), len(val)) == (500, 100)
    assert not set(train) & set(val) and set(train) | set(val) == set(IDS)
    assert_rate_within_one_image(train)
    assert_rate_within_one_image(val)
    assert train == sorted(train) and val == sorted(val)


def test_holdout_without_stratification_still_splits_five_to_one():
    [fold] = holdout_split(IDS, POSITIVE, stratify=False, val_fraction=0.25)
    assert (len(fold["train"]), len(fold["val"])) == (450, 150)


def test_same_seed_same_split_whatever_the_input_order():
    pairs = list(zip(IDS, POSITIVE))
    random.Random(1).shuffle(pairs)
    shuffled_ids, shuffled_positive = zip(*pairs)
    for split in (holdout_split, kfold_split):
        assert split(shuffled_ids, shuffled_positive, seed=3) == split(IDS, POSITIVE, seed=3)


def test_different_seed_different_split():
    assert holdout_split(IDS, POSITIVE, seed=0) != holdout_split(IDS, POSITIVE, seed=1)
    assert kfold_split(IDS, POSITIVE, seed=0) != kfold_split(IDS, POSITIVE, seed=1)


def test_kfold_puts_each_image_in_exactly_one_val_fold_stratified():
    folds = kfold_split(IDS, POSITIVE, n_folds=5)
    assert len(folds) == 5
    vals = [image_id for fold in folds for image_id in fold["val"]]
    assert sorted(vals) == sorted(IDS)
    for fold in folds:
        assert len(fold["val"]) == 120 and len(fold["train"]) == 480
        assert set(fold["train"]) | set(fold["val"]) == set(IDS)
        assert not set(fold["train"]) & set(fold["val"])
        assert_rate_within_one_image(fold["val"])


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: holdout_split(IDS, POSITIVE[:-1]), "600 image ids but 599"),
        (lambda: holdout_split(IDS + IDS[:1], POSITIVE + [True]), "unique"),
        (lambda: holdout_split(IDS, POSITIVE, val_fraction=1.0), "val_fraction"),
        (lambda: holdout_split([], []), "cannot split 0 images"),
        (lambda: holdout_split(["a", "b", "c"], [True, False, False]), "3 images (1 positive)"),
        (lambda: kfold_split(IDS, POSITIVE, n_folds=1), "cannot split 600 images"),
        (lambda: kfold_split(["a", "b", "c"], [True, False, True], n_folds=5), "split 3 images"),
    ],
)
def test_bad_split_requests_raise_clear_errors(call, words):
    with pytest.raises(PneumosegError, match=re.escape(words)):
        call()


def test_save_load_round_trip_leaves_no_temp_file(tmp_path):
    folds = kfold_split(IDS, POSITIVE, n_folds=3)
    path = tmp_path / "nested" / "splits.json"
    save_splits(folds, path)
    assert load_splits(path) == folds
    assert [p.name for p in path.parent.iterdir()] == ["splits.json"]
    save_splits(folds[:1], path)  # overwriting works too
    assert load_splits(path) == folds[:1]


@pytest.mark.parametrize(
    "text, words",
    [
        ('[{"train": ["a"], "val": ["b"]', "not a JSON split file"),
        ("\xff\xfe", "not a JSON split file"),
        ("[]", "non-empty list of folds"),
        ('{"train": [], "val": []}', "non-empty list of folds"),
        ('[{"train": ["a"]}]', 'fold 0 must be an object with exactly the keys "train" and "val"'),
        ('[{"train": ["a"], "val": ["b"], "test": []}]', "exactly the keys"),
        ('[{"train": ["a"], "val": "b"}]', '"val" must be a list of image id strings'),
        ('[{"train": ["a", 3], "val": ["b"]}]', '"train" must be a list of image id strings'),
        ('[{"train": ["a", "a"], "val": ["b"]}]', "lists an image id twice"),
        ('[{"train": ["a"], "val": ["b"]}, {"train": [], "val": ["a", "a"]}]', "fold 1:"),
        ('[{"train": ["a"], "val": ["b"]}, {"train": ["a"], "val": ["a"]}]', "train and val share"),
    ],
)
def test_corrupt_split_file_names_the_file(tmp_path, text, words):
    path = tmp_path / "splits.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(PneumosegError, match="splits.json") as info:
        load_splits(path)
    assert words in str(info.value)


def test_missing_split_file(tmp_path):
    with pytest.raises(PneumosegError, match="absent.json: cannot read split file"):
        load_splits(tmp_path / "absent.json")


def test_load_or_create_makes_then_reuses_the_file(tmp_path):
    path = tmp_path / "splits.json"
    created = load_or_create_splits(path, IDS, POSITIVE, seed=5)
    assert created == holdout_split(IDS, POSITIVE, seed=5) == json.loads(path.read_text())
    # a different seed now is ignored: the file on disk is the split of record
    assert load_or_create_splits(path, IDS[::-1], POSITIVE[::-1], seed=6) == created


def test_load_or_create_kfold(tmp_path):
    path = tmp_path / "splits.json"
    created = load_or_create_splits(path, IDS, POSITIVE, n_folds=4)
    assert created == kfold_split(IDS, POSITIVE, n_folds=4)
    assert load_or_create_splits(path, IDS, POSITIVE, n_folds=4) == created


@pytest.mark.parametrize(
    "ids, n_folds, words",
    [
        (IDS[:-1], None, "fold 0 lacks 0 of the images and has 1 others"),
        (IDS + ["extra"], None, "fold 0 lacks 1 of the images and has 0 others"),
        (IDS, 5, "it has 1 fold(s), 5 wanted"),
    ],
)
def test_load_or_create_refuses_a_file_for_other_data(tmp_path, ids, n_folds, words):
    path = tmp_path / "splits.json"
    save_splits(holdout_split(IDS, POSITIVE), path)
    with pytest.raises(PneumosegError) as info:
        load_or_create_splits(path, ids, [False] * len(ids), n_folds=n_folds)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message
    assert "delete it" in message and "another splits path" in message
