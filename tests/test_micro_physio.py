"""Synthetic physiology (MNE + NeuroKit2) and the EEG / peripheral features: values, shapes, bad input."""

import numpy as np
import pytest

from facelab.micro import physio as ph

SF = 250.0


@pytest.fixture(scope="module")
def session():
    rng = np.random.default_rng(0)
    segs = [{"duration_s": 4, "emotion": None},
            {"duration_s": 16, "emotion": "fearful", "scr_onsets_s": [8.0, 14.0]}]
    sig = ph.simulate_peripheral(segs, SF, periph_coupling=2.0, periph_noise=0.2, ecg_method="simple", rng=rng)
    onsets = [8.0, 14.0]
    eeg = ph.simulate_eeg(20, SF, onsets, ["fearful", "fearful"], blinks_s=[3.0], eeg_coupling=0.9,
                          subject_variability=0.0, rng=rng)
    return sig, eeg, ph.make_raw(eeg, {k: sig[k] for k in ph.PERIPHERAL_CHANNELS}, SF)


def test_raw_layout(session):
    _, _, raw = session
    assert raw.ch_names[:32] == list(ph.EEG_CHANNELS) and len(raw.ch_names) == 37
    assert raw.get_channel_types(picks=list(ph.PERIPHERAL_CHANNELS)) == list(ph.PERIPHERAL_CHANNELS.values())
    assert raw.get_montage() is not None and raw.info["sfreq"] == SF


def test_blink_artefact_is_frontal(session):
    _, eeg, _ = session
    i = int(3.0 * SF)
    fp1, oz = ph.EEG_CHANNELS.index("Fp1"), ph.EEG_CHANNELS.index("Oz")
    bump = eeg[:, i - 10:i + 10].mean(1) - eeg[:, i - 200:i - 100].mean(1)  # 120 uV blink at Fp1, none at Oz
    assert bump[fp1] > 80e-6 and abs(bump[oz]) < 40e-6


def test_line_noise_peak(session):
    from mne.time_frequency import psd_array_welch

    _, eeg, _ = session
    psd, f = psd_array_welch(eeg[:4], SF, fmin=40, fmax=60, n_fft=500, verbose="error")
    assert abs(f[psd.mean(0).argmax()] - 50.0) < 1.0


def test_heart_rate_and_scr_follow_the_emotion(session):
    _, _, raw = session
    proc = ph.process_peripheral(raw)
    rate = proc["ECG_Rate"].to_numpy()
    rest, emo = np.nanmean(rate[: int(4 * SF)]), np.nanmean(rate[int(6 * SF):])
    # fearful adds 10 bpm at coupling 1; coupling 2 -> ~20 bpm (noise 0.2 -> std ~0.5 bpm)
    assert emo - rest > 12
    feats = ph.peripheral_features(proc, SF, [8.0, 14.0], [(0.5, 4.0), (0.5, 4.0)])
    assert list(feats.columns) == list(ph.PERIPHERAL_FEATURES)
    assert (feats["hr_delta"] > 12).all()
    assert (feats["eda_delta"] > 0).all()  # an SCR follows each onset


def test_eeg_band_power_responds_to_pattern(session):
    _, _, raw = session
    bp = ph.eeg_band_power(raw, [8.0, 14.0])
    assert bp.shape == (2, 11, 32 * 5)
    np.testing.assert_allclose(bp[:, 0], 0.0)  # baseline-corrected on the first window
    pat = ph.eeg_emotion_patterns()[ph.EMOTIONS.index("fearful")].reshape(-1)  # (32*5,) channel-major
    change = bp[:, 4:7].mean((0, 1))  # ~0.5-1.25 s after onset: response peak
    up, down = pat > 0.6, pat < -0.6
    assert change[up].mean() > change[down].mean() + 0.1


def test_bad_input(session):
    sig, eeg, raw = session
    periph = {k: sig[k] for k in ph.PERIPHERAL_CHANNELS}
    with pytest.raises(ValueError, match="samples"):
        ph.make_raw(eeg, {**periph, "EDA": periph["EDA"][:-10]}, SF)
    with pytest.raises(ValueError, match="missing"):
        ph.make_raw(eeg, {k: v for k, v in periph.items() if k != "RSP"}, SF)
    with pytest.raises(ValueError, match=r"\(32, n_times\)"):
        ph.make_raw(eeg[:31], periph, SF)
    with pytest.raises(ValueError, match="outside the recording"):
        ph.eeg_band_power(raw, [19.5])
    assert ph.eeg_band_power(raw, []).shape == (0, 11, 160)
    with pytest.raises(ValueError, match="required channels"):
        ph.check_raw(raw.copy().drop_channels(["Cz"]), ph.EEG_CHANNELS)
    with pytest.raises(ValueError, match="unknown emotion"):
        ph.simulate_eeg(5, SF, [1.0], ["bored"])


def test_nan_handling(session):
    _, _, raw = session
    bad = raw.copy()
    bad._data[3, 100:110] = np.nan
    with pytest.raises(ValueError, match="NaN.*F3"):
        ph.check_raw(bad)
    fixed = ph.check_raw(bad, nan="interpolate")
    assert np.isfinite(fixed.get_data()).all()
    long_gap = raw.copy()
    long_gap._data[3, 100:400] = np.nan  # 1.2 s
    with pytest.raises(ValueError, match="gap"):
        ph.check_raw(long_gap, nan="interpolate", max_gap_s=0.5)


def test_zero_coupling_removes_the_eeg_response():
    rng = np.random.default_rng(1)
    eeg = ph.simulate_eeg(12, SF, [4.0, 8.0], ["happy", "happy"], eeg_coupling=0.0, line_noise_uv=0, rng=rng)
    sig = {k: np.zeros(eeg.shape[1]) for k in ph.PERIPHERAL_CHANNELS}
    bp = ph.eeg_band_power(ph.make_raw(eeg, sig, SF), [4.0, 8.0])
    pat = ph.eeg_emotion_patterns()[0].reshape(-1)
    change = bp[:, 4:7].mean((0, 1))
    assert abs(change[pat > 0.6].mean() - change[pat < -0.6].mean()) < 0.1


def test_response_gain_only_touches_each_window():
    """The EEG responses' gain, window by window, equals the sum over full-length envelopes (zeros outside the
    window) that the simulator computed before, exactly."""
    rng = np.random.default_rng(2)
    n, n_ch = int(20 * SF), 32
    t = np.arange(n) / SF
    onsets = [-1.0, 0.0, 3.3, 3.5, 9.87, 18.9, 19.95, 25.0]  # before the start, overlapping, past the end
    emotions = [ph.EMOTIONS[i % len(ph.EMOTIONS)] for i in range(len(onsets))]
    patterns = rng.normal(0, 1, (len(ph.EMOTIONS), n_ch))
    naive = np.ones((n_ch, n))
    for onset, emo in zip(onsets, emotions):
        u = (t - onset - 0.1) / 1.5
        env = np.where((u >= 0) & (u <= 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 2, 0.0)
        naive += 0.7 * patterns[ph.EMOTIONS.index(emo)][:, None] * env[None, :]
    gain = ph._response_gain(n_ch, ph._responses(t, onsets, emotions), 0.7, patterns, n)
    np.testing.assert_array_equal(gain, naive)
    assert len(ph._responses(t, [25.0], ["happy"])) == 0
    with pytest.raises(ValueError, match="unknown emotion"):
        ph._responses(t, [1.0], ["bored"])


def test_ecg_simulation_is_remembered_exactly():
    import neurokit2 as nk

    args = dict(duration=5, sampling_rate=250, heart_rate=71.3, heart_rate_std=1.2, noise=0.02, method="ecgsyn",
                random_state=123)
    ph._ecg_simulate.cache_clear()
    first = ph._ecg_simulate(*args.values())
    np.testing.assert_array_equal(first, np.asarray(nk.ecg_simulate(**args)))
    again = ph._ecg_simulate(*args.values())
    assert again is first and ph._ecg_simulate.cache_info().hits == 1 and not first.flags.writeable
    # a re-simulation from the same generator state (as with_physiology does per coupling) gives the same signals
    segs = [{"duration_s": 3, "emotion": None}, {"duration_s": 6, "emotion": "happy", "scr_onsets_s": [4.0]}]
    a = ph.simulate_peripheral(segs, SF, rng=np.random.default_rng(5))
    hits = ph._ecg_simulate.cache_info().hits
    b = ph.simulate_peripheral(segs, SF, rng=np.random.default_rng(5))
    assert ph._ecg_simulate.cache_info().hits == hits + 2
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
