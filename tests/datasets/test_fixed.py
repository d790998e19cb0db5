"""Fixed validation/test mixtures: first-N, sorting, reference channel, mixture = sum of references, collate."""

import json
import logging

import numpy as np
import pytest
import torch

from datasets.fixed import FixedDataset, collate_mixtures
from datasets.manifest import ManifestError, write_manifest
from datasets.synthetic import write_synthetic_corpus
from utils.audio import read_audio


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), files_per_prompt=1)


def test_first_n_sorted_longest_first_and_mixture_is_sum(corpus):
    manifest = json.loads(corpus["fixed"].read_text())["valid"]
    ids = list(manifest)
    ds = FixedDataset(corpus["fixed"], num_data=2, split="valid")
    assert len(ds) == 2
    assert [i for i, _ in ds.entries] == [ids[1], ids[0]]  # first two of the manifest, longest first
    item = ds[0]
    entry = manifest[ids[1]]
    assert item["prompts"] == ["speech", "sfxbg"] and item["sample_rate"] == 16000
    assert item["dataset"] == "vctk_demand" and item["id"] == ids[1] and item["manifest"] == "fixed"
    speech, _ = read_audio(entry["ref"]["speech_1"])
    np.testing.assert_array_equal(item["refs"][0].numpy(), speech[0])
    torch.testing.assert_close(item["mix"], item["refs"].sum(0))
    assert item["refs"].shape == (2, entry["num_samples"])
    assert len(FixedDataset(corpus["fixed"], split="test", sort_by_length=False)) == 3


def test_reference_channel(corpus):
    ch0 = FixedDataset(corpus["fixed_css"], split="test", channel=0)[0]
    ch1 = FixedDataset(corpus["fixed_css"], split="test", channel=1)[0]
    torch.testing.assert_close(ch1["refs"], 0.8 * ch0["refs"])  # synthetic stereo: right = 0.8 x left
    assert ch1["channel"] == 1 and ch0["dataset"] == "dnr"
    assert FixedDataset(corpus["fixed_css"], split="test", channel=1).name == "fixed_css_ch1"


def test_missing_references_skipped_with_report(corpus, tmp_path, caplog):
    data = json.loads(corpus["fixed"].read_text())
    first = next(iter(data["valid"]))
    data["valid"][first]["ref"]["sfxbg_1"] = str(tmp_path / "gone.wav")
    path = write_manifest(tmp_path / "m.json", data)
    with caplog.at_level(logging.WARNING):
        ds = FixedDataset(path, split="valid")
    assert len(ds) == 2 and first not in [i for i, _ in ds.entries]
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "1 reference file(s) missing; 1 mixture(s) skipped" in msg and "gone.wav" in msg
    assert ds.skipped == [(first, f"missing reference file {tmp_path / 'gone.wav'}")]


def test_an_unreadable_item_is_a_marker_that_collate_lists(corpus, tmp_path, caplog):
    data = json.loads(corpus["fixed"].read_text())
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    first = next(iter(data["valid"]))
    data["valid"][first]["ref"]["speech_1"] = str(bad)
    ds = FixedDataset(write_manifest(tmp_path / "m.json", data), split="valid", sort_by_length=False)
    with caplog.at_level(logging.WARNING):
        marker = ds[0]
    assert marker["skipped"] == first and marker["manifest"] == "m" and marker["reason"]  # reported, not scored
    assert str(bad) in caplog.text
    batch = collate_mixtures([ds[0], ds[1]])
    assert batch["mix"].shape[0] == 1 and batch["id"] == [ds.entries[1][0]] and batch["skipped"] == [marker]
    assert collate_mixtures([None]) is None
    assert collate_mixtures([marker, None]) == {"skipped": [marker]}


def test_collate_pads_and_rejects_mixed_counts(corpus):
    ds = FixedDataset(corpus["fixed"], split="valid")
    items = [ds[0], ds[2]]
    batch = collate_mixtures(items)
    n0, n2 = items[0]["mix"].shape[0], items[1]["mix"].shape[0]
    assert n0 > n2 and batch["mix"].shape == (2, n0) and batch["refs"].shape == (2, 2, n0)
    assert batch["lengths"].tolist() == [n0, n2] and batch["sample_rate"] == 16000
    assert not batch["mix"][1, n2:].any()
    other = FixedDataset(corpus["fixed_css"], split="valid")[0]
    with pytest.raises(ValueError, match="batch size of 1"):
        collate_mixtures([items[0], other])


def test_pool_split_rejected(corpus):
    with pytest.raises(ManifestError, match="source pool"):
        FixedDataset(corpus["pools"], split="train")


def test_non_finite_reference_is_refused_naming_the_file(tmp_path):
    from utils.audio import AudioError, write_audio

    speech, noise = tmp_path / "speech.wav", tmp_path / "noise.wav"
    write_audio(speech, 0.1 * np.ones(1600, np.float32), 16000)
    bad = 0.1 * np.ones(1600, np.float32)
    bad[7] = np.nan
    write_audio(noise, bad, 16000, subtype="FLOAT")
    entry = {"mix": str(speech), "ref": {"speech_1": str(speech), "sfxbg_1": str(noise)}, "sample_rate": 16000,
             "num_samples": 1600, "dataset_name": "vctk_demand"}
    path = write_manifest(tmp_path / "m.json", {"train": {}, "valid": {"a": entry}, "test": {}})
    ds = FixedDataset(path, split="valid")
    with pytest.raises(AudioError, match=rf"{noise}.*NaN or infinite"):
        ds[0]
