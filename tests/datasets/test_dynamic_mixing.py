"""Dynamic mixing from synthetic pools: crops, padding, resampling, gains, on-the-fly *bg sums, redraws, seeding."""

import json
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datasets.dynamic_mixing import DynamicMixingDataset, SourceDrawError, SourcePool, load_source_pools
from datasets.fixed import collate_mixtures
from datasets.manifest import ManifestError, pool_entry, write_manifest
from datasets.sampler import MixtureKey, SourceCountBatchSampler
from datasets.synthetic import write_synthetic_corpus
from utils.audio import read_audio, write_audio

CHUNK = 0.5


def chain_conf(names, gain=(-10, 0), **extra):
    """Every prompt may follow every prompt; num_appear large."""
    return {p: {"init_prob": 1.0, "next": dict.fromkeys(names, 1.0), "num_appear": 100, "gain": list(gain),
                **extra.get(p, {})} for p in names}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def pools(corpus):
    return load_source_pools([corpus["pools"]])


def test_item_shapes_mixture_and_gains(pools):
    names = ["speech", "sfx", "drums"]
    ds = DynamicMixingDataset(pools, chain_conf(names, gain=(-12, -3)), CHUNK, seed=3)
    for index in range(6):
        item = ds[MixtureKey(0, 0, index, 3)]
        assert item["refs"].shape == (3, 24000) and item["mix"].shape == (24000,)
        assert item["sample_rate"] == 48000 and len(item["prompts"]) == 3
        assert set(item["prompts"]) <= set(names)
        torch.testing.assert_close(item["mix"], item["refs"].sum(0))
        level = 20 * torch.log10(item["refs"].pow(2).mean(-1).sqrt())
        assert ((level > -12.5) & (level < -2.5)).all(), level  # unit RMS then a gain in [-12, -3] dB


def test_crop_of_long_file_is_a_segment_and_short_file_is_padded_at_random_offsets(pools):
    ds = DynamicMixingDataset(pools, chain_conf(["speech", "sfx"]), CHUNK, seed=0)
    speech = pools["speech"]
    full, sr = read_audio(speech.paths[0])
    rng = np.random.default_rng(0)
    for _ in range(5):
        crop = ds._crop(speech, 0, rng)
        assert crop.shape == (round(CHUNK * sr),)
        starts = [s for s in range(full.shape[1] - crop.shape[0] + 1) if np.array_equal(full[0, s: s + 8], crop[:8])]
        assert any(np.array_equal(full[0, s: s + crop.shape[0]], crop) for s in starts)
    sfx = pools["sfx"]  # 0.3 s files in a 0.5 s chunk
    short, sr = read_audio(sfx.paths[0])
    offsets = set()
    for _ in range(8):
        crop = ds._crop(sfx, 0, rng)
        assert crop.shape == (round(CHUNK * sr),)
        nz = np.flatnonzero(crop)
        offset = int(nz[0])
        np.testing.assert_array_equal(crop[offset: offset + short.shape[1]], short[0])
        assert not crop[:offset].any() and not crop[offset + short.shape[1]:].any()
        offsets.add(offset)
    assert len(offsets) > 1


def test_stereo_sources_use_a_random_channel(tmp_path):
    path = tmp_path / "stereo.wav"
    write_audio(path, np.stack([np.full(48000, 0.5), np.full(48000, -0.25)]).astype(np.float32), 48000, "FLOAT")
    pool = SourcePool("drums", [str(path)], np.array([48000]), np.array([48000]), ["m.json"])
    ds = DynamicMixingDataset({"drums": pool}, chain_conf(["drums"]), CHUNK)
    rng = np.random.default_rng(0)
    values = [float(ds._crop(pool, 0, rng)[0]) for _ in range(40)]
    assert set(values) == {0.5, -0.25}
    assert 10 <= values.count(0.5) <= 30


def test_resampling_to_lowest_rate_limits_bandwidth(pools):
    names = ["speech", "sfxbg"]  # 16 kHz tones + 48 kHz white noise
    rng_key = MixtureKey(0, 0, 0, 2)

    def high_band_fraction(ds):
        item = ds[rng_key]
        noise = item["refs"][item["prompts"].index("sfxbg")]
        spec = torch.fft.rfft(noise).abs().pow(2)
        freqs = torch.fft.rfftfreq(noise.shape[0], 1 / 48000)
        return float(spec[freqs > 9000].sum() / spec.sum())

    conf = chain_conf(names, sfxbg={"dynamic_mixing_prob": 0.0})
    conf["speech"]["next"] = {"sfxbg": 1.0, "speech": 0.0}
    conf["sfxbg"]["next"] = {"speech": 1.0, "sfxbg": 0.0}
    low = DynamicMixingDataset(pools, conf, CHUNK, seed=0, downsample_to_minimum_fs=True)
    full = DynamicMixingDataset(pools, conf, CHUNK, seed=0, downsample_to_minimum_fs=False)
    assert high_band_fraction(low) < 2e-3  # band-limited to 8 kHz like the 16 kHz speech
    assert high_band_fraction(full) > 0.5  # white noise at 48 kHz keeps its full band


def spy_draws(ds, monkeypatch):
    """Replace file reading with a recorder returning unit noise; returns the list of drawn prompts."""
    drawn = []

    def fake(prompt, rng):
        drawn.append(prompt)
        return rng.standard_normal(round(CHUNK * 16000)).astype(np.float32), 16000, f"{prompt}.wav"

    monkeypatch.setattr(ds, "draw_recording", fake)
    return drawn


def test_musicbg_on_the_fly_uses_distinct_stems(pools, monkeypatch):
    conf = chain_conf(["musicbg"], musicbg={"dynamic_mixing_prob": 1.0, "num_srcs_and_weights": {4: 1.0}})
    no_pool = {k: v for k, v in pools.items() if k != "musicbg"}
    ds = DynamicMixingDataset(no_pool, conf, CHUNK, seed=0)
    drawn = spy_draws(ds, monkeypatch)
    for i in range(20):
        drawn.clear()
        ds[MixtureKey(0, 0, i, 1)]
        assert sorted(drawn) == ["bass", "drums", "other", "vocals"]  # 4 distinct stems, never a musicbg file
    conf["musicbg"]["num_srcs_and_weights"] = {2: 1.0}
    ds = DynamicMixingDataset(no_pool, conf, CHUNK, seed=0)
    drawn = spy_draws(ds, monkeypatch)
    for i in range(20):
        drawn.clear()
        ds[MixtureKey(0, 0, i, 1)]
        assert len(drawn) == 2 and len(set(drawn)) == 2 and set(drawn) <= {"drums", "bass", "vocals", "other"}


def test_sfxbg_dynamic_mixing_probability_and_component_count(pools, monkeypatch):
    conf = chain_conf(["sfxbg"], sfxbg={"dynamic_mixing_prob": 0.25, "num_srcs_and_weights": {3: 1.0}})
    ds = DynamicMixingDataset(pools, conf, CHUNK, seed=0)
    drawn = spy_draws(ds, monkeypatch)
    n, sums = 2000, 0
    for i in range(n):
        drawn.clear()
        ds[MixtureKey(0, 0, i, 1)]
        assert drawn in (["sfxbg"], ["sfx", "sfx", "sfx"])
        sums += drawn[0] == "sfx"
    assert abs(sums / n - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)


def test_bg_without_components_or_prompt_without_pool_is_a_start_up_error(pools):
    only_speech = {"speech": pools["speech"], "sfxbg": pools["sfxbg"]}
    conf = chain_conf(["speech", "sfxbg"], sfxbg={"dynamic_mixing_prob": 0.5})
    with pytest.raises(ValueError, match="dynamic_mixing_prob.*sfx sources"):
        DynamicMixingDataset(only_speech, conf, CHUNK)
    with pytest.raises(ValueError, match="vocals.*no training manifest"):
        DynamicMixingDataset({"speech": pools["speech"]}, chain_conf(["speech", "vocals"]), CHUNK)


def test_silent_sources_are_redrawn_then_fail_naming_the_pool(tmp_path, caplog):
    silent, loud = tmp_path / "silent.wav", tmp_path / "loud.wav"
    write_audio(silent, np.zeros(16000, np.float32), 16000)
    write_audio(loud, 0.1 * np.ones(16000, np.float32), 16000)
    pool = SourcePool("speech", [str(silent), str(loud)], np.array([16000] * 2), np.array([16000] * 2), ["m.json"])
    ds = DynamicMixingDataset({"speech": pool}, chain_conf(["speech"]), CHUNK)
    rng = np.random.default_rng(0)
    for _ in range(20):
        wave, sr, path = ds.draw_recording("speech", rng)
        assert sr == 16000 and np.abs(wave).max() > 0 and path == str(loud)
    only_silent = SourcePool("speech", [str(silent)], np.array([16000]), np.array([16000]), ["m.json"])
    ds = DynamicMixingDataset({"speech": only_silent}, chain_conf(["speech"]), CHUNK, max_attempts=4)
    with pytest.raises(SourceDrawError, match=r"'speech' source in 4 attempts from the pool of m.json.*silent"):
        ds[MixtureKey(0, 0, 0, 1)]


def test_unreadable_file_is_logged_skipped_and_never_recursed(tmp_path, caplog):
    bad, good = tmp_path / "bad.wav", tmp_path / "good.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    write_audio(good, 0.1 * np.ones(16000, np.float32), 16000)
    pool = SourcePool("sfx", [str(bad), str(good)], np.array([16000] * 2), np.array([16000] * 2), ["m.json"])
    ds = DynamicMixingDataset({"sfx": pool}, chain_conf(["sfx"]), CHUNK)
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            ds.draw_recording("sfx", rng)
    warnings = [r for r in caplog.records if "cannot read training source" in r.getMessage()]
    assert len(warnings) == 1 and str(bad) in warnings[0].getMessage()  # logged once
    only_bad = SourcePool("sfx", [str(bad)], np.array([16000]), np.array([16000]), ["m.json"])
    ds = DynamicMixingDataset({"sfx": only_bad}, chain_conf(["sfx"]), CHUNK, max_attempts=3)
    with pytest.raises(SourceDrawError, match="unreadable"):
        ds.draw_recording("sfx", rng)


def test_missing_files_reported_at_start_up_and_skipped(tmp_path, corpus, caplog):
    data = json.loads(corpus["pools"].read_text())
    speech = data["train"]["speech"]
    speech.append(pool_entry(tmp_path / "gone1.wav", 16000, 16000, "x"))
    speech.append(pool_entry(tmp_path / "gone2.wav", 16000, 16000, "x"))
    path = write_manifest(tmp_path / "m.json", data)
    with caplog.at_level(logging.WARNING):
        pools = load_source_pools([path])
    msg = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert len(msg) == 1 and "2 of 5" in msg[0] and "gone1.wav" in msg[0]
    assert len(pools["speech"]) == 3 and not any("gone" in p for p in pools["speech"].paths)


def test_fixed_mixture_manifest_is_rejected_as_training_pool(corpus, tmp_path):
    data = json.loads(corpus["fixed"].read_text())
    data["train"] = data["valid"]
    path = write_manifest(tmp_path / "b.json", data)
    with pytest.raises(ManifestError, match="fixed mixtures.*source pool"):
        load_source_pools([path])


def test_seeding_ranks_epochs_and_workers(pools):
    conf = chain_conf(["speech", "sfx", "drums"])
    ds = DynamicMixingDataset(pools, conf, CHUNK, seed=11)
    a = ds[MixtureKey(0, 0, 5, 2)]
    torch.testing.assert_close(a["mix"], ds[MixtureKey(0, 0, 5, 2)]["mix"])  # reproducible
    for other in (MixtureKey(0, 1, 5, 2), MixtureKey(1, 0, 5, 2), MixtureKey(0, 0, 6, 2)):
        assert not torch.equal(a["mix"], ds[other]["mix"])
    assert not torch.equal(a["mix"], DynamicMixingDataset(pools, conf, CHUNK, seed=12)[MixtureKey(0, 0, 5, 2)]["mix"])

    def run(workers):
        sampler = SourceCountBatchSampler(3, 2, {2: 0.5, 3: 0.5}, seed=11)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate_mixtures)
        return [b["mix"] for b in loader]

    single, parallel = run(0), run(2)
    assert len(single) == 3 and all(torch.equal(x, y) for x, y in zip(single, parallel, strict=True))
    # the two workers loaded different batches, and no two mixtures of the epoch are equal
    flat = torch.cat(single)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(len(flat)) for j in range(i))


def test_non_finite_sources_are_logged_with_their_path_and_redrawn(tmp_path, caplog):
    inf, good = tmp_path / "inf.wav", tmp_path / "good.wav"
    wave = 0.1 * np.ones(16000, np.float32)
    wave[::200] = np.inf  # scattered Inf samples (in every crop): the RMS check alone would pass them
    write_audio(inf, wave, 16000, subtype="FLOAT")
    write_audio(good, 0.1 * np.ones(16000, np.float32), 16000)
    pool = SourcePool("sfx", [str(inf), str(good)], np.array([16000] * 2), np.array([16000] * 2), ["m.json"])
    ds = DynamicMixingDataset({"sfx": pool}, chain_conf(["sfx"]), CHUNK)
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING):
        draws = [ds.draw_recording("sfx", rng) for _ in range(20)]
    assert all(np.isfinite(w).all() and p == str(good) for w, _, p in draws)
    warnings = [r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage()]
    assert len(warnings) == 1 and str(inf) in warnings[0]
    item = ds[MixtureKey(0, 0, 0, 1)]
    assert torch.isfinite(item["mix"]).all() and item["sources"] == [[str(good)]]
    only_inf = SourcePool("sfx", [str(inf)], np.array([16000]), np.array([16000]), ["m.json"])
    ds = DynamicMixingDataset({"sfx": only_inf}, chain_conf(["sfx"]), CHUNK, max_attempts=3)
    with pytest.raises(SourceDrawError, match="non-finite"):
        ds.draw_recording("sfx", rng)


def test_draws_do_not_depend_on_what_the_worker_saw_before(tmp_path):
    """A resumed run's fresh workers must draw what the uninterrupted run's workers drew."""
    bad, good = tmp_path / "bad.wav", tmp_path / "good.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    write_audio(good, 0.1 * np.random.default_rng(0).standard_normal(32000).astype(np.float32), 16000)
    pool = SourcePool("sfx", [str(bad), str(good)], np.array([16000] * 2), np.array([32000] * 2), ["m.json"])
    seen = DynamicMixingDataset({"sfx": pool}, chain_conf(["sfx"]), CHUNK)
    for i in range(10):
        seen[MixtureKey(0, 0, i, 1)]
    fresh = DynamicMixingDataset({"sfx": pool}, chain_conf(["sfx"]), CHUNK)
    for i in range(10, 20):
        assert torch.equal(seen[MixtureKey(0, 0, i, 1)]["mix"], fresh[MixtureKey(0, 0, i, 1)]["mix"])


def test_song_key_is_the_path_without_the_prompt():
    from datasets.dynamic_mixing import song_key

    assert song_key("c/piano/song1.wav", "piano") == song_key("c/other/song1.wav", "other") == ("c", "song1.wav")
    assert song_key("musdb/song1/piano.wav", "piano") == song_key("musdb/song1/other.flac", "other") == \
        ("musdb", "song1")
    assert song_key("c/pianos/song1.wav", "piano") is None  # no component is the prompt: not a song's stem


def _song_pools(tmp_path, songs):
    """``{prompt: SourcePool}`` of ``root/<prompt>/song<k>.wav``: every stem of song k is the same ramp (slope k+1),
    so stems cropped at the same time are equal after unit-RMS scaling, and stems of other songs or times are not."""
    n, sr = 3 * 16000, 16000
    pools = {}
    for k, prompts in enumerate(songs):
        ramp = (0.05 + (np.arange(n) / n) * (k + 1) / len(songs)).astype(np.float32)
        for prompt in prompts:
            path = tmp_path / prompt / f"song{k}.wav"
            path.parent.mkdir(exist_ok=True)
            write_audio(path, ramp, sr, "FLOAT")
            pool = pools.setdefault(prompt, SourcePool(prompt, [], np.zeros(0, np.int64), np.zeros(0, np.int64),
                                                       ["m.json"]))
            pool.paths.append(str(path))
            pool.sample_rates = np.append(pool.sample_rates, sr)
            pool.num_samples = np.append(pool.num_samples, n)
    return pools


def test_same_song_mixtures_are_one_songs_stems_cropped_at_the_same_time(tmp_path):
    pools = _song_pools(tmp_path, [("drums", "other", "piano")] * 3 + [("drums", "other")])
    conf = chain_conf(["drums", "other", "piano"])
    for p in conf:
        conf[p]["num_appear"] = 1  # distinct prompts: a song has one stem of each
    ds = DynamicMixingDataset(pools, conf, CHUNK, seed=1, same_song_prob=1.0)
    songs_seen = set()
    for index in range(12):
        item = ds[MixtureKey(0, 0, index, 3)]
        files = [parts[0] for parts in item["sources"]]
        names = {f.rsplit("/", 1)[1] for f in files}
        assert len(names) == 1 and names != {"song3.wav"}, files  # one song, and only one with all three stems
        songs_seen |= names
        unit = item["refs"] / item["refs"].pow(2).mean(-1, keepdim=True).sqrt()
        torch.testing.assert_close(unit, unit[:1].expand_as(unit), rtol=1e-4, atol=1e-4)  # the same time
    assert len(songs_seen) == 3
    refs = [ds[MixtureKey(0, 0, i, 2)]["refs"][0] for i in range(6)]
    assert len({round(float(r[0] / r[-1]), 3) for r in refs}) > 1  # random crop times (a ramp's first/last value)
    pairs = {frozenset(p.rsplit("/", 1)[1] for p, *_ in ds[MixtureKey(0, 0, i, 2)]["sources"]) for i in range(40)}
    assert frozenset({"song3.wav"}) in pairs  # a song with only two stems serves a two-stem mixture


def test_same_song_prob_zero_draws_as_before_and_one_falls_back_when_no_song_fits(tmp_path):
    pools = _song_pools(tmp_path, [("drums", "other")] * 3 + [("piano",)] * 2)
    conf = chain_conf(["drums", "other", "piano"])
    plain = DynamicMixingDataset(pools, conf, CHUNK, seed=4)
    zero = DynamicMixingDataset(pools, conf, CHUNK, seed=4, same_song_prob=0.0)
    one = DynamicMixingDataset(pools, conf, CHUNK, seed=4, same_song_prob=1.0)
    for index in range(10):
        key = MixtureKey(0, 0, index, 3)
        assert torch.equal(plain[key]["mix"], zero[key]["mix"])  # existing runs draw the same mixtures
        item = one[key]
        files = [parts[0] for parts in item["sources"]]
        if "piano" in item["prompts"] or len(set(item["prompts"])) < 3:  # no song has piano; repeats: independent
            assert item["refs"].shape == (3, round(CHUNK * 48000))
        else:
            assert len({f.rsplit("/", 1)[1] for f in files}) == 1
    with pytest.raises(ValueError, match="same_song_prob"):
        DynamicMixingDataset(pools, conf, CHUNK, same_song_prob=1.5)
