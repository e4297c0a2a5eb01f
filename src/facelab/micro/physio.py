"""Synchronized physiology for the synthetic MMME-like corpus, and the features the recognisers read from it.

One subject's session is a single :class:`mne.io.RawArray` (as MMME releases one continuous recording per subject):
32 EEG channels on the 10-20 positions of MNE's ``colin27_1020`` montage, ECG, PPG, respiration, EDA and skin
temperature, all at one sampling rate, with expression onsets, blinks and trial boundaries as
:class:`mne.Annotations`.

- EEG: 1/f background + band-limited components (delta ... gamma) whose power rises or falls after each expression
  onset following an emotion-specific topography (``eeg_coupling`` scales the change); ocular artefacts on frontal
  channels at the blinks; line noise.
- Peripheral signals come from :mod:`neurokit2` simulators (``ecg_simulate``, ``ppg_simulate``, ``rsp_simulate``,
  ``eda_simulate``) with emotion-dependent heart rate, heart-rate variability, breathing rate, skin-conductance
  responses after the onsets and a skin-temperature slope (``periph_coupling`` scales those changes).
- Features: EEG band power in 5 bands per sliding window (:func:`mne.time_frequency.psd_array_welch`), peripheral
  features from ``ecg_process``, ``ppg_process``, ``rsp_process``, ``eda_process`` and ``hrv_time``.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "EEG_CHANNELS", "PERIPHERAL_CHANNELS", "BANDS", "EMOTIONS", "EMOTION_PHYSIOLOGY", "MONTAGE",
    "eeg_emotion_patterns", "simulate_eeg", "simulate_peripheral", "make_raw",
    "check_raw", "check_annotations", "process_peripheral", "eeg_band_power", "peripheral_features",
    "PERIPHERAL_FEATURES",
]

#: A 32-channel 10-20 cap (the layout of common 32-channel caps: actiCAP, Emotiv-like research caps).
EEG_CHANNELS = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3", "Cz", "C4", "T8",
                "TP9", "CP5", "CP1", "CP2", "CP6", "TP10", "P7", "P3", "Pz", "P4", "P8", "PO9", "O1", "Oz", "O2",
                "PO10")
#: Peripheral channels and their MNE channel types (SI units: V for ECG, S for EDA, degrees C for temperature).
PERIPHERAL_CHANNELS = {"ECG": "ecg", "PPG": "bio", "RSP": "resp", "EDA": "gsr", "SKT": "temperature"}
#: MNE 1.13 deprecates ``standard_1020`` in favour of ``colin27_1020`` (same 10-20 names, template head).
MONTAGE = "colin27_1020"
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}
#: The five classes (named as in :mod:`facelab.synth.facs`).
EMOTIONS = ("happy", "surprised", "disgusted", "fearful", "angry")

#: Emotion-dependent peripheral changes at coupling 1: heart rate (bpm), heart-rate std (bpm), breathing rate
#: (breaths/min), SCR amplitude per expression (microsiemens) and skin-temperature slope (degrees C per minute).
#: Roughly arousal-ordered (fear > anger > surprise > happiness > disgust), so classes overlap as in real data.
EMOTION_PHYSIOLOGY = pd.DataFrame(
    {"hr": [4.0, 6.0, -3.0, 10.0, 8.0], "hr_std": [2.0, 1.0, 1.5, 0.5, 1.0], "rr": [1.0, 3.0, -1.5, 5.0, 3.0],
     "scr": [0.25, 0.8, 0.4, 1.0, 0.6], "skt": [0.4, 0.0, -0.2, -0.6, 0.5]},
    index=pd.Index(EMOTIONS, name="emotion"))

PERIPHERAL_FEATURES = ("hr_delta", "hrv_rmssd", "ppg_rate_delta", "rr_delta", "scr_count", "scr_amplitude",
                       "eda_delta", "skt_slope")


@contextmanager
def _quiet():
    """NeuroKit2 warns on short windows (too few peaks); the callers handle the resulting NaNs explicitly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="neurokit2")
        warnings.filterwarnings("ignore", message="Mean of empty slice")
        warnings.filterwarnings("ignore", message="invalid value encountered")
        warnings.filterwarnings("ignore", message="Degrees of freedom")
        yield


def _positions() -> np.ndarray:
    """(32, 3) head positions of :data:`EEG_CHANNELS` in metres from the montage."""
    import mne

    pos = mne.channels.make_standard_montage(MONTAGE).get_positions()["ch_pos"]
    return np.array([pos[ch] for ch in EEG_CHANNELS])


def eeg_emotion_patterns(seed: int = 1234) -> np.ndarray:
    """The ground-truth EEG response: (5 emotions, 32 channels, 5 bands) relative power change in [-1, 1].

    Each (emotion, band) is a smooth scalp topography: a signed Gaussian blob around a channel drawn from ``seed``,
    so neighbouring channels respond alike, as volume conduction makes them do.
    """
    rng = np.random.default_rng(seed)
    pos = _positions()
    pos = pos - pos.mean(0)
    width = 0.05  # metres: about the distance between neighbouring 10-20 sites
    out = np.zeros((len(EMOTIONS), len(EEG_CHANNELS), len(BANDS)))
    for e in range(len(EMOTIONS)):
        for b in range(len(BANDS)):
            centre = pos[rng.integers(len(EEG_CHANNELS))]
            sign = rng.choice([-1.0, 1.0])
            out[e, :, b] = sign * np.exp(-np.sum((pos - centre) ** 2, axis=1) / (2 * width**2))
    return out


def _pink_noise(rng, n_channels, n_times):
    spectrum = rng.standard_normal((n_channels, n_times // 2 + 1)) + 1j * rng.standard_normal((n_channels, n_times // 2 + 1))
    f = np.arange(n_times // 2 + 1, dtype=float)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n=n_times, axis=1)
    return x / x.std(axis=1, keepdims=True)


def _responses(t: np.ndarray, onsets_s: Sequence[float], emotions: Sequence[str]) -> list[tuple]:
    """Each onset's event-related response, a Hann bump from 0.1 s to 1.6 s after it: ``(emotion index, first
    sample, end sample, envelope)`` over the samples ``t`` where it is defined (zero elsewhere)."""
    bad = [emo for emo in emotions if emo not in EMOTIONS]
    if bad:
        raise ValueError(f"unknown emotion {bad[0]!r}: expected one of {EMOTIONS}")
    out = []
    for onset, emo in zip(onsets_s, emotions):
        u = (t - onset - 0.1) / 1.5
        inside = np.flatnonzero((u >= 0) & (u <= 1))
        if len(inside):
            i0, i1 = inside[0], inside[-1] + 1
            out.append((EMOTIONS.index(emo), i0, i1, np.sin(np.pi * np.clip(u[i0:i1], 0, 1)) ** 2))
    return out


def _response_gain(n_ch: int, responses: list[tuple], coupling: float, patterns: np.ndarray, n: int) -> np.ndarray:
    """(n_ch, n) band-power gain: 1 + coupling x pattern (emotions x channels) x envelope, summed over the
    :func:`_responses`. Each response changes only its own window: the same values as adding its zeros everywhere
    else, in a fraction of the time."""
    gain = np.ones((n_ch, n))
    for e, i0, i1, env in responses:
        gain[:, i0:i1] += coupling * patterns[e][:, None] * env[None, :]
    return gain


def simulate_eeg(duration_s: float, sfreq: float, onsets_s: Sequence[float], emotions: Sequence[str],
                 blinks_s: Sequence[float] = (), *, eeg_coupling: float = 0.6, eeg_noise: float = 1.0,
                 line_noise_uv: float = 5.0, line_freq: float = 50.0, blink_uv: float = 120.0,
                 subject_variability: float = 0.3, patterns: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """(32, n_times) EEG in volts with event-related band-power changes after each onset.

    Parameters
    ----------
    duration_s, sfreq : float
        Length and sampling rate of the recording.
    onsets_s, emotions : sequences of the same length
        Expression onsets (seconds) and their emotion (one of :data:`EMOTIONS`).
    blinks_s : sequence of float
        Blink times (seconds): a frontal ocular artefact (Fp1/Fp2 strongest) is added at each.
    eeg_coupling : float
        Relative band-power change at the peak of the response (0 = EEG carries no emotion information).
    eeg_noise : float
        Scale of the ongoing background activity relative to the band-limited components.
    line_noise_uv, blink_uv : float
        Amplitudes (microvolts) of mains interference and of a blink artefact on Fp1/Fp2.
    subject_variability : float
        Std of a per-call perturbation of the topographies (each subject responds a bit differently).
    """
    import mne

    if len(onsets_s) != len(emotions):
        raise ValueError(f"onsets_s and emotions must have the same length, got {len(onsets_s)} and {len(emotions)}")
    rng = np.random.default_rng() if rng is None else rng
    n = int(round(duration_s * sfreq))
    t = np.arange(n) / sfreq
    patterns = eeg_emotion_patterns() if patterns is None else patterns
    subject_patterns = patterns + subject_variability * rng.standard_normal(patterns.shape)
    n_ch = len(EEG_CHANNELS)
    eeg = eeg_noise * _pink_noise(rng, n_ch, n) * 6e-6
    base_amp = {"delta": 6e-6, "theta": 4e-6, "alpha": 6e-6, "beta": 3e-6, "gamma": 1.5e-6}
    occipital = np.array([1.0 + (1.0 if ch.startswith(("O", "P")) else 0.0) for ch in EEG_CHANNELS])
    responses = _responses(t, onsets_s, emotions)
    for b, (band, (lo, hi)) in enumerate(BANDS.items()):
        component = mne.filter.filter_data(rng.standard_normal((n_ch, n)), sfreq, lo, hi, verbose="error")
        component /= component.std(axis=1, keepdims=True) + 1e-12
        gain = _response_gain(n_ch, responses, eeg_coupling, subject_patterns[:, :, b], n)
        amp = base_amp[band] * (occipital if band == "alpha" else 1.0)
        eeg += np.sqrt(np.clip(gain, 0.05, None)) * component * np.asarray(amp).reshape(-1, 1)
    # ocular artefacts: eye blinks project mostly onto the frontal-polar electrodes
    frontal = {"Fp1": 1.0, "Fp2": 1.0, "F7": 0.45, "F8": 0.45, "F3": 0.35, "F4": 0.35, "Fz": 0.4, "FC1": 0.12,
               "FC2": 0.12, "FC5": 0.12, "FC6": 0.12}
    weights = np.array([frontal.get(ch, 0.0) for ch in EEG_CHANNELS])
    blink_wave = np.zeros(n)
    half = int(0.2 * sfreq)
    shape = np.sin(np.linspace(0, np.pi, 2 * half)) ** 2
    for tb in blinks_s:
        i0 = int(round(tb * sfreq)) - half
        lo, hi = max(i0, 0), min(i0 + 2 * half, n)
        if hi > lo:
            blink_wave[lo:hi] += shape[lo - i0:hi - i0]
    eeg += blink_uv * 1e-6 * weights[:, None] * blink_wave[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=(n_ch, 1))
    eeg += line_noise_uv * 1e-6 * np.sin(2 * np.pi * line_freq * t[None, :] + phase)
    return eeg


def _scr_shape(sfreq: float, length_s: float = 12.0) -> np.ndarray:
    """Canonical skin-conductance response (Bach 2010, as in neurokit2's simulator), peak normalised to 1."""
    t = np.arange(int(length_s * sfreq)) / sfreq
    g = np.exp(-((t - 3.0745) ** 2) / (2 * 0.7013**2))
    h = np.exp(-t / 3.1487) + np.exp(-t / 14.1257)
    f = np.convolve(g, h)[: len(t)]
    return f / f.max()


@functools.lru_cache(maxsize=512)
def _ecg_simulate(duration: int, sampling_rate: int, heart_rate: float, heart_rate_std: float, noise: float,
                  method: str, random_state: int) -> np.ndarray:
    """:func:`neurokit2.ecg_simulate` (deterministic given ``random_state``), remembered: the ECGSYN model is the
    slowest part of the simulation, and re-simulations under other couplings (:func:`facelab.micro.corpus.
    with_physiology`) repeat the resting baselines' calls exactly. Read-only result."""
    import neurokit2 as nk

    with _quiet():
        ecg = np.array(nk.ecg_simulate(duration=duration, sampling_rate=sampling_rate, heart_rate=heart_rate,
                                       heart_rate_std=heart_rate_std, noise=noise, method=method,
                                       random_state=random_state), dtype=float)
    ecg.flags.writeable = False
    return ecg


def simulate_peripheral(segments: Sequence[dict], sfreq: float, *, periph_coupling: float = 1.0,
                        periph_noise: float = 1.0, ecg_method: str = "ecgsyn",
                        rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """ECG, PPG, RSP, EDA and SKT for a session made of consecutive segments, with NeuroKit2 simulators.

    Parameters
    ----------
    segments : list of dict
        Each ``{"duration_s": float, "emotion": str | None, "scr_onsets_s": [...]}``; ``emotion=None`` is a
        resting baseline. SCR onsets are absolute session times of the expressions (an SCR follows 1-3 s later).
    sfreq : float
        Sampling rate of every returned signal.
    periph_coupling : float
        Scale of the emotion-dependent changes of :data:`EMOTION_PHYSIOLOGY` (0 = no information).
    periph_noise : float
        Scale of the trial-to-trial variability and of the simulators' measurement noise.
    ecg_method : str
        ``method`` of :func:`neurokit2.ecg_simulate` (``"ecgsyn"``: the dynamical model with heart-rate variability;
        ``"simple"``: a fast template, used by the quick tests).

    Returns
    -------
    dict of str -> ndarray
        ``ECG`` (V), ``PPG`` (a.u.), ``RSP`` (a.u.), ``EDA`` (S), ``SKT`` (degrees C), all of the same length, and
        ``hr``: the heart rate (bpm) used per sample (the PPG pulse rate of the video's skin pulsation).
    """
    import neurokit2 as nk

    rng = np.random.default_rng() if rng is None else rng
    base_hr = rng.uniform(62, 80)
    base_rr = rng.uniform(12, 16)
    base_eda = rng.uniform(2.0, 8.0)
    base_skt = rng.uniform(32.5, 34.5)
    out = {k: [] for k in ("ECG", "PPG", "RSP", "SKT", "hr")}
    total = 0
    skt_level = base_skt
    for seg in segments:
        n = int(round(seg["duration_s"] * sfreq))
        emo = seg.get("emotion")
        if emo is not None and emo not in EMOTIONS:
            raise ValueError(f"unknown emotion {emo!r}: expected one of {EMOTIONS} or None for a baseline")
        d = EMOTION_PHYSIOLOGY.loc[emo] if emo is not None else EMOTION_PHYSIOLOGY.iloc[0] * 0
        hr = base_hr + periph_coupling * d["hr"] + periph_noise * rng.normal(0, 2.5)
        hr_std = max(0.3, 1.5 + periph_coupling * d["hr_std"] + periph_noise * rng.normal(0, 0.4))
        rr = max(6.0, base_rr + periph_coupling * d["rr"] + periph_noise * rng.normal(0, 1.5))
        seeds = rng.integers(0, 2**31 - 1, size=4)
        ecg = _ecg_simulate(int(np.ceil(n / sfreq)) + 1, int(sfreq), float(hr), float(hr_std), 0.02 * periph_noise,
                            ecg_method, int(seeds[0]))
        with _quiet():
            ppg = nk.ppg_simulate(duration=n / sfreq, sampling_rate=sfreq, heart_rate=hr,
                                  motion_amplitude=0.05 * periph_noise, powerline_amplitude=0.0,
                                  random_state=int(seeds[1]))
            rsp = nk.rsp_simulate(duration=max(20, int(np.ceil(n / sfreq)) + 1), sampling_rate=int(sfreq), respiratory_rate=rr,
                                  noise=0.02 * periph_noise, method="breathmetrics", random_state=int(seeds[2]))
        slope = (periph_coupling * d["skt"] + periph_noise * rng.normal(0, 0.15)) / 60.0  # degrees C per second
        skt = skt_level + slope * np.arange(n) / sfreq
        skt_level = skt[-1]
        out["ECG"].append(np.resize(np.asarray(ecg), n) * 1e-3)
        out["PPG"].append(np.resize(np.asarray(ppg), n))
        out["RSP"].append(np.resize(np.asarray(rsp), n))
        out["SKT"].append(skt)
        out["hr"].append(np.full(n, hr))
        total += n
    sig = {k: np.concatenate(v) for k, v in out.items()}
    sig["SKT"] = sig["SKT"] + periph_noise * np.cumsum(rng.normal(0, 0.0005, total))
    with _quiet():
        eda = np.asarray(nk.eda_simulate(length=total, sampling_rate=sfreq, scr_number=0, drift=-0.005,
                                         noise=0.01 * periph_noise, random_state=int(rng.integers(2**31 - 1))))
    eda = eda - eda[0] + base_eda
    scr = _scr_shape(sfreq)
    for seg in segments:
        emo = seg.get("emotion")
        for onset in seg.get("scr_onsets_s", ()):
            amp = max(0.0, periph_coupling * EMOTION_PHYSIOLOGY.loc[emo, "scr"] * rng.uniform(0.6, 1.4)
                      + periph_noise * rng.normal(0, 0.1))
            i0 = int(round((onset + rng.uniform(0.0, 1.0)) * sfreq))
            if 0 <= i0 < total:
                m = min(len(scr), total - i0)
                eda[i0:i0 + m] += amp * scr[:m]
    sig["EDA"] = eda * 1e-6
    return sig


def make_raw(eeg: np.ndarray, peripheral: dict[str, np.ndarray], sfreq: float,
             annotations=None) -> "mne.io.RawArray":  # noqa: F821
    """One :class:`mne.io.RawArray` (32 EEG + 5 peripheral channels) on the ``colin27_1020`` montage.

    Raises
    ------
    ValueError
        If the EEG is not (32, n) or a peripheral signal is missing or of another length.
    """
    import mne

    eeg = np.asarray(eeg, dtype=float)
    if eeg.ndim != 2 or eeg.shape[0] != len(EEG_CHANNELS):
        raise ValueError(f"eeg must be ({len(EEG_CHANNELS)}, n_times), got shape {eeg.shape}")
    missing = [ch for ch in PERIPHERAL_CHANNELS if ch not in peripheral]
    if missing:
        raise ValueError(f"peripheral signals {missing} are missing; expected {list(PERIPHERAL_CHANNELS)}")
    lengths = {ch: len(peripheral[ch]) for ch in PERIPHERAL_CHANNELS}
    if any(v != eeg.shape[1] for v in lengths.values()):
        raise ValueError(f"all signals must have the EEG's {eeg.shape[1]} samples at {sfreq} Hz, got {lengths}; "
                         "resample them first (mne.io.Raw.resample)")
    data = np.vstack([eeg] + [np.asarray(peripheral[ch], dtype=float)[None] for ch in PERIPHERAL_CHANNELS])
    info = mne.create_info(list(EEG_CHANNELS) + list(PERIPHERAL_CHANNELS), sfreq,
                           ["eeg"] * len(EEG_CHANNELS) + list(PERIPHERAL_CHANNELS.values()))
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_montage(MONTAGE, on_missing="raise", verbose="error")
    if annotations is not None:
        check_annotations(annotations, raw.n_times / float(sfreq))
        raw.set_annotations(annotations, verbose="error")   # checked above: MNE would only warn and drop them
    return raw


def check_annotations(annotations, duration_s: float) -> None:
    """Refuse annotations that MNE would silently drop or crop: a negative onset, or one that ends after the
    recording (``duration_s`` seconds from its first sample).

    Raises
    ------
    ValueError
        Naming how many are outside, the first of them and the recording's extent.
    """
    onset = np.asarray(annotations.onset, dtype=float)
    dur = np.asarray(annotations.duration, dtype=float)
    bad = ~np.isfinite(onset) | ~np.isfinite(dur) | (onset < 0) | (dur < 0) | (onset + dur > duration_s + 1e-9)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} of {len(onset)} annotations lie outside the recording (0 to "
                         f"{duration_s:.3f} s), e.g. {annotations.description[j]!r} at {onset[j]:.3f} s lasting "
                         f"{dur[j]:.3f} s; MNE would drop or crop them - fix their onsets (seconds from the first "
                         "sample) or crop them yourself")


def check_raw(raw, required: Iterable[str] = (), *, nan: str = "raise", max_gap_s: float = 0.5):
    """Validate a recording: required channels present and no NaN samples (or short NaN gaps interpolated).

    Parameters
    ----------
    raw : mne.io.BaseRaw
    required : iterable of str
        Channel names that must be present.
    nan : {"raise", "interpolate"}
        ``"raise"``: any NaN is an error naming the channels. ``"interpolate"``: linear interpolation of NaN gaps no
        longer than ``max_gap_s`` (longer gaps still raise); returns a corrected copy.

    Returns
    -------
    mne.io.BaseRaw
        ``raw`` itself, or an interpolated copy.
    """
    if nan not in ("raise", "interpolate"):
        raise ValueError(f"nan must be 'raise' or 'interpolate', got {nan!r}")
    missing = [ch for ch in required if ch not in raw.ch_names]
    if missing:
        raise ValueError(f"recording lacks required channels {missing}; it has {raw.ch_names}")
    data = raw.get_data()
    bad = ~np.isfinite(data)
    if not bad.any():
        return raw
    names = [raw.ch_names[i] for i in np.flatnonzero(bad.any(axis=1))]
    if nan == "raise":
        raise ValueError(f"recording has {int(bad.sum())} NaN/inf samples in channels {names}; "
                         "pass nan='interpolate' to fill short gaps")
    sfreq = raw.info["sfreq"]
    for i in np.flatnonzero(bad.any(axis=1)):
        row = bad[i]
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = (stops - starts).max() / sfreq
        if longest > max_gap_s or row.all():
            raise ValueError(f"channel {raw.ch_names[i]} has a NaN gap of {longest:.2f} s, longer than "
                             f"max_gap_s={max_gap_s}")
        idx = np.arange(len(row))
        data[i, row] = np.interp(idx[row], idx[~row], data[i, ~row])
    out = raw.copy()
    out._data[:] = data
    return out


def process_peripheral(raw) -> pd.DataFrame:
    """NeuroKit2 processing of a session: ``ecg_clean`` + ``ecg_peaks``, ``ppg_clean`` + ``ppg_peaks`` (rates by
    ``signal_rate``), ``rsp_process`` and ``eda_process``.

    Returns a DataFrame with one row per sample: ``ECG_Rate``, ``ECG_R_Peaks``, ``PPG_Rate``, ``RSP_Rate``,
    ``EDA_Clean``, ``SCR_Peaks``, ``SCR_Amplitude`` and ``SKT`` (degrees C).
    """
    import neurokit2 as nk

    raw = check_raw(raw, PERIPHERAL_CHANNELS)
    sfreq = raw.info["sfreq"]
    x = {ch: raw.get_data(picks=[ch])[0] for ch in PERIPHERAL_CHANNELS}
    n = len(x["ECG"])
    with _quiet():
        # peaks and rates only: ecg_process would also delineate P/QRS/T waves, which no feature here reads
        _, ecg_info = nk.ecg_peaks(nk.ecg_clean(x["ECG"] * 1e3, sampling_rate=sfreq), sampling_rate=sfreq)
        r_peaks = np.asarray(ecg_info["ECG_R_Peaks"], dtype=int)
        _, ppg_info = nk.ppg_peaks(nk.ppg_clean(x["PPG"], sampling_rate=sfreq), sampling_rate=sfreq)
        rsp, _ = nk.rsp_process(x["RSP"], sampling_rate=sfreq)
        eda, _ = nk.eda_process(x["EDA"] * 1e6, sampling_rate=sfreq)
        ecg_rate = nk.signal_rate(r_peaks, sampling_rate=sfreq, desired_length=n)
        ppg_rate = nk.signal_rate(np.asarray(ppg_info["PPG_Peaks"], dtype=int), sampling_rate=sfreq,
                                  desired_length=n)
    r_mask = np.zeros(n, dtype=int)
    r_mask[r_peaks] = 1
    return pd.DataFrame({"ECG_Rate": np.asarray(ecg_rate, float), "ECG_R_Peaks": r_mask,
                         "PPG_Rate": np.asarray(ppg_rate, float), "RSP_Rate": rsp["RSP_Rate"].to_numpy(),
                         "EDA_Clean": eda["EDA_Clean"].to_numpy(), "SCR_Peaks": eda["SCR_Peaks"].to_numpy(),
                         "SCR_Amplitude": eda["SCR_Amplitude"].fillna(0).to_numpy(), "SKT": x["SKT"]})


def peripheral_features(processed: pd.DataFrame, sfreq: float, onsets_s: Sequence[float],
                        baselines_s: Sequence[tuple[float, float]], window_s: float = 6.0) -> pd.DataFrame:
    """One row of :data:`PERIPHERAL_FEATURES` per expression onset.

    Changes (``*_delta``) are relative to the trial's resting baseline interval; HRV (RMSSD) comes from
    :func:`neurokit2.hrv_time` on the R peaks of the window; SCRs are counted 1-5 s after onset. NaNs (e.g. too few
    breaths in a window) are left for the caller (see :func:`facelab.micro.recognition.impute_standardise`).
    """
    import neurokit2 as nk

    if len(onsets_s) != len(baselines_s):
        raise ValueError(f"one baseline interval per onset is needed, got {len(onsets_s)} onsets and "
                         f"{len(baselines_s)} baselines")
    n = len(processed)
    rows = []

    def sl(a, b):
        return slice(max(0, int(a * sfreq)), min(n, int(b * sfreq)))

    for onset, (b0, b1) in zip(onsets_s, baselines_s):
        if not (0 <= onset < n / sfreq):
            raise ValueError(f"onset {onset:.2f} s lies outside the recording (0 to {n / sfreq:.2f} s)")
        if not (0 <= b0 < b1 <= n / sfreq + 1e-9) or int(b1 * sfreq) - int(b0 * sfreq) < 1:
            raise ValueError(f"baseline ({b0:.2f}, {b1:.2f}) s must be an interval (start < end) inside the recording "
                             f"(0 to {n / sfreq:.2f} s) of at least one sample")
        w, base = sl(onset, onset + window_s), sl(b0, b1)
        with _quiet():
            row = {"hr_delta": np.nanmean(processed["ECG_Rate"].to_numpy()[w])
                   - np.nanmean(processed["ECG_Rate"].to_numpy()[base]),
                   "ppg_rate_delta": np.nanmean(processed["PPG_Rate"].to_numpy()[w])
                   - np.nanmean(processed["PPG_Rate"].to_numpy()[base]),
                   "rr_delta": np.nanmean(processed["RSP_Rate"].to_numpy()[sl(onset - 2, onset + window_s + 2)])
                   - np.nanmean(processed["RSP_Rate"].to_numpy()[base])}
            peaks = np.flatnonzero(processed["ECG_R_Peaks"].to_numpy()[sl(onset - 2, onset + window_s + 2)])
            try:
                row["hrv_rmssd"] = float(nk.hrv_time(peaks, sampling_rate=sfreq)["HRV_RMSSD"].iloc[0])
            except Exception:  # fewer than 3 beats: HRV undefined
                row["hrv_rmssd"] = np.nan
        scr = sl(onset + 1.0, onset + 5.0)
        row["scr_count"] = float(processed["SCR_Peaks"].to_numpy()[scr].sum())
        row["scr_amplitude"] = float(processed["SCR_Amplitude"].to_numpy()[scr].max(initial=0.0))
        eda = processed["EDA_Clean"].to_numpy()
        row["eda_delta"] = float(np.mean(eda[scr]) - np.mean(eda[sl(onset - 1.0, onset)])) if onset >= 1.0 else np.nan
        skt = processed["SKT"].to_numpy()[w]
        row["skt_slope"] = float(np.polyfit(np.arange(len(skt)) / sfreq, skt, 1)[0] * 60) if len(skt) > 2 else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PERIPHERAL_FEATURES))


def eeg_band_power(raw, onsets_s: Sequence[float], *, tmin: float = -0.5, tmax: float = 2.5,
                   win_s: float = 0.5, step_s: float = 0.25, picks: Sequence[str] = EEG_CHANNELS) -> np.ndarray:
    """Log band power per sliding window after each onset: (n_onsets, n_windows, 32 x 5), baseline-corrected.

    Windows of ``win_s`` every ``step_s`` from ``tmin`` to ``tmax`` around each onset; the power spectral density
    comes from :func:`mne.time_frequency.psd_array_welch`, is averaged within each band of :data:`BANDS`, log10'ed,
    and the first (pre-onset) window is subtracted, so features are changes relative to just before the onset.

    Raises
    ------
    ValueError
        If channels are missing, data contain NaN, or a window falls outside the recording.
    """
    from mne.time_frequency import psd_array_welch

    raw = check_raw(raw, picks)
    sfreq = raw.info["sfreq"]
    data = raw.get_data(picks=list(picks))
    n_win = int(round((tmax - tmin - win_s) / step_s)) + 1
    L = int(round(win_s * sfreq))
    starts_rel = tmin + step_s * np.arange(n_win)
    if len(onsets_s) == 0:
        return np.zeros((0, n_win, len(picks) * len(BANDS)))
    segs = []
    for onset in onsets_s:
        i0 = np.round((onset + starts_rel) * sfreq).astype(int)
        if i0[0] < 0 or i0[-1] + L > data.shape[1]:
            raise ValueError(f"EEG window [{onset + tmin:.2f}, {onset + tmax:.2f}] s around onset {onset:.2f} s lies "
                             f"outside the recording (0 to {data.shape[1] / sfreq:.2f} s)")
        segs.append(np.stack([data[:, i:i + L] for i in i0]))
    segs = np.stack(segs)  # (n_onsets, n_win, ch, L)
    psd, freqs = psd_array_welch(segs, sfreq, fmin=1.0, fmax=45.0, n_fft=L, verbose="error")
    bp = np.stack([psd[..., (freqs >= lo) & (freqs < hi)].mean(-1) for lo, hi in BANDS.values()], axis=-1)
    logp = np.log10(bp + 1e-30)
    logp = logp - logp[:, :1]
    return logp.reshape(len(onsets_s), n_win, -1)
