"""``FaceWorld``: the parametric face generator with ground truth for identity, AUs, emotion, pose, light,
occlusion and makeup; ``FaceBatch`` holds a rendered batch."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.synth.facs import (AU_NAMES, EMOTION_PROTOTYPES, EMOTIONS, apply_aus, au_gain, au_vector,
                                emotion_vector)
from facelab.synth.fields import Beard, Clutter, Degrade, Glasses, HandParam, Light, MaskParam, Makeup, Pose, ScarfParam
from facelab.synth.identity import Identity, make_identities
from facelab.synth.landmarks import LOWER_LIP_BOTTOM, NOSE_BRIDGE
from facelab.synth.render import OCCLUSIONS, Scene, render

NUISANCE_PRESETS = {
    # ranges: (low, high) drawn uniformly per image
    "none": dict(yaw=(0, 0), pitch=(0, 0), roll=(0, 0), light_azimuth=(0, 0), light_elevation=(25, 25),
                 light_intensity=(1.0, 1.0), ambient=(0.45, 0.45), colour_temperature=(0, 0), scale=(1, 1),
                 shift=(0, 0), blur=(0, 0), noise=(0, 0), jpeg=(100, 100), resolution=(1, 1),
                 background="plain", gaze=(0, 0)),
    "mild": dict(yaw=(-10, 10), pitch=(-6, 6), roll=(-5, 5), light_azimuth=(-30, 30), light_elevation=(10, 40),
                 light_intensity=(0.85, 1.1), ambient=(0.4, 0.55), colour_temperature=(-0.08, 0.08),
                 scale=(0.94, 1.06), shift=(-0.04, 0.04), blur=(0, 0.6), noise=(0, 0.02), jpeg=(60, 100),
                 resolution=(0.7, 1.0), background="smooth", gaze=(-0.4, 0.4)),
    "full": dict(yaw=(-16, 16), pitch=(-10, 10), roll=(-8, 8), light_azimuth=(-45, 45), light_elevation=(0, 45),
                 light_intensity=(0.7, 1.15), ambient=(0.35, 0.6), colour_temperature=(-0.12, 0.12),
                 scale=(0.9, 1.1), shift=(-0.06, 0.06), blur=(0, 1.0), noise=(0, 0.04), jpeg=(30, 100),
                 resolution=(0.5, 1.0), background="cluttered", gaze=(-0.8, 0.8)),
}
#: The limits outside which a pose cannot be rendered by the 2.5-D warp.
POSE_LIMITS = {"yaw": 60.0, "pitch": 40.0, "roll": 45.0}
MAKEUP_COLOURS = {
    "lipstick": {"red": (0.72, 0.06, 0.10), "pink": (0.86, 0.38, 0.55), "purple": (0.45, 0.12, 0.40),
                 "orange": (0.90, 0.38, 0.12), "nude": (0.74, 0.48, 0.42), "dark red": (0.42, 0.03, 0.08),
                 "black": (0.08, 0.06, 0.07), "coral": (0.95, 0.45, 0.38)},
    "eyeshadow": {"blue": (0.20, 0.35, 0.80), "purple": (0.50, 0.25, 0.60), "green": (0.25, 0.55, 0.30),
                  "brown": (0.42, 0.27, 0.18), "gold": (0.85, 0.68, 0.30), "pink": (0.90, 0.50, 0.65),
                  "black": (0.10, 0.09, 0.10), "silver": (0.78, 0.78, 0.80)},
    "eyeliner": {"black": (0.04, 0.04, 0.05), "brown": (0.25, 0.15, 0.08), "blue": (0.10, 0.20, 0.55)},
    "blush": {"pink": (0.93, 0.45, 0.55), "peach": (0.95, 0.60, 0.45), "red": (0.80, 0.20, 0.20),
              "coral": (0.95, 0.45, 0.38)},
}
MAKEUP_KINDS = tuple(MAKEUP_COLOURS)
_SCARF_COLOURS = torch.tensor([[0.6, 0.1, 0.12], [0.15, 0.2, 0.5], [0.85, 0.82, 0.75], [0.2, 0.4, 0.25],
                               [0.55, 0.45, 0.35], [0.1, 0.1, 0.12]])
_MASK_COLOURS = torch.tensor([[0.62, 0.78, 0.90], [0.93, 0.94, 0.95], [0.15, 0.15, 0.17], [0.55, 0.75, 0.85]])


@dataclass
class FaceBatch:
    """A rendered batch: ``images`` (N,3,H,W) in [0,1], ``labels`` (DataFrame), ``landmarks`` (N,68,2) pixels,
    ``masks`` (N,1,H,W) bool occluder pixels, ``face_masks`` (N,1,H,W) bool visible face region before occlusion.

    Unpacks as ``images, labels = batch``.
    """

    images: torch.Tensor
    labels: pd.DataFrame
    landmarks: torch.Tensor
    masks: torch.Tensor
    face_masks: torch.Tensor

    def __iter__(self) -> Iterator:
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> "FaceBatch":
        return FaceBatch(self.images.to(device), self.labels, self.landmarks.to(device), self.masks.to(device),
                         self.face_masks.to(device))


def _check_range(name, value, lo, hi):
    vals = value if isinstance(value, (tuple, list)) else (value,)
    for v in vals:
        if not isinstance(v, (int, float, np.floating, np.integer)) or not (lo <= float(v) <= hi):
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got {value!r}")


class FaceWorld:
    """A deterministic world of synthetic people.

    Parameters
    ----------
    seed : int
        World seed: identity ``k`` of a given seed is always the same person.
    size : int
        Rendered image side in pixels (64 to 256).
    device : str or torch.device
        Where to render ("cpu", "cuda", "auto", ...).
    identity_strength : float
        Scale of identity shape variation (1 = default; smaller makes people look more alike).
    style : {"cartoon", "photo"}
        How faces are drawn. ``"cartoon"`` (the default, unchanged): soft geometric primitives. ``"photo"``: the
        face's skin, eyes, brows, nose and lips come from a morphable appearance model of real face photos
        (:mod:`facelab.synth.appearance`; each identity its own coefficient vector), with multi-scale skin noise
        and stronger, more photographic action units; hair, ears, neck, beard, glasses, makeup, occluders, pose,
        light and camera are shared with the cartoon style. The same seed gives the same people (geometry, tone,
        hair, labels) in both styles. In ``"photo"`` the eyes are the photos' (``gaze`` is labelled but not drawn).

    Examples
    --------
    >>> world = FaceWorld(seed=0, size=112)
    >>> images, labels = world.sample(n_identities=4, per_identity=2, nuisance="mild")
    >>> images.shape
    torch.Size([8, 3, 112, 112])
    """

    def __init__(self, seed: int = 0, size: int = 112, device="cpu", identity_strength: float = 1.0,
                 style: str = "cartoon"):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(size, (int, np.integer)) or not (32 <= size <= 512):
            raise ValueError(f"size must be an integer number of pixels in [32, 512] (64-256 recommended), got {size!r}")
        if not (0.0 <= float(identity_strength) <= 3.0):
            raise ValueError(f"identity_strength must lie in [0, 3], got {identity_strength}")
        from facelab.synth.identity import STYLES

        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        self.style = style
        from facelab.runtime import resolve_device

        self.seed = int(seed)
        self.size = int(size)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.identity_strength = float(identity_strength)
        self._generator = torch.Generator().manual_seed(self.seed * 7 + 1)
        self._cache: OrderedDict[int, Identity] = OrderedDict()
        self._layer_cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        #: memory allowed for cached identity layers (bytes)
        self.cache_bytes = 512 * 2**20

    def __repr__(self) -> str:
        extra = "" if self.style == "cartoon" else f", style='{self.style}'"
        return f"FaceWorld(seed={self.seed}, size={self.size}, device='{self.device}'{extra})"

    # ------------------------------------------------------------------ identities
    def identities(self, ids: Sequence[int]) -> Identity:
        """Per-identity parameters (on the CPU) of identities ``ids``."""
        ids = [int(k) for k in ids]
        missing = [k for k in dict.fromkeys(ids) if k not in self._cache]
        if missing:
            made = make_identities(self.seed, missing, self.identity_strength, style=self.style)
            for j, k in enumerate(missing):
                self._cache[k] = (made, j)                          # a row of the batch, see _cached_identity
            while len(self._cache) > 4096:
                self._cache.popitem(last=False)
            if missing == ids:                                      # all new, each once: the batch just made
                return made
        parts = [self._cached_identity(k) for k in ids]
        out = {}
        for f in parts[0].__dataclass_fields__:
            v0 = getattr(parts[0], f)
            out[f] = None if v0 is None else torch.cat([getattr(p, f) for p in parts]) \
                if isinstance(v0, torch.Tensor) else [x for p in parts for x in getattr(p, f)]
        return Identity(**out)

    def _cached_identity(self, k: int) -> Identity:
        """Identity ``k`` from the cache, where it is kept as (batch it was made in, row) until first needed."""
        entry = self._cache[k]
        if isinstance(entry, tuple):
            made, j = entry
            entry = self._cache[k] = made.index(slice(j, j + 1))
        return entry

    def _layers(self, ids, ident: Identity) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity layers of identities ``ids`` (with parameters ``ident``, one row per entry of ``ids``), drawn once
        per identity and cached: (layers (U, 6, size, size) of the distinct identities, on the device; (N,) index of
        each entry of ``ids`` into them). The identities drawn now come first, in the order of ``ids``."""
        from facelab.synth.render import LAYER_CHANNELS, chunk_slices, draw_identity, map_chunks

        ids = [int(k) for k in ids]
        distinct = list(dict.fromkeys(ids))
        missing = [k for k in distinct if k not in self._layer_cache]
        order = missing + [k for k in distinct if k in self._layer_cache]
        layers = torch.empty(len(order), len(LAYER_CHANNELS), self.size, self.size, device=self.device)
        for j in range(len(missing), len(order)):
            layers[j] = self._layer_cache[order[j]]
        entry = {k: j for j, k in enumerate(ids)}

        def draw(part):                                 # each chunk writes its own rows of ``layers``
            rows = torch.tensor([entry[k] for k in missing[part]])
            draw_identity(ident.index(rows).to(self.device), self.size, out=layers[part], style=self.style)

        map_chunks(draw, chunk_slices(len(missing), self.device))
        for j, k in enumerate(missing):
            self._layer_cache[k] = layers[j]
        budget = max(16, int(self.cache_bytes // (6 * 4 * self.size * self.size)))
        while len(self._layer_cache) > max(budget, len(distinct)):
            self._layer_cache.popitem(last=False)
        row = {k: j for j, k in enumerate(order)}
        return layers, torch.tensor([row[k] for k in ids], device=self.device)

    # ------------------------------------------------------------------ sampling
    def sample(self, n_identities: int = 10, per_identity: int = 1, identity_offset: int = 0,
               nuisance: str = "none", expression=None, occlusion=None, occlusion_fraction=None, makeup=None,
               generator: torch.Generator | None = None, identities: Sequence[int] | None = None,
               glasses: bool | None = None, beard: bool | None = None, **overrides) -> FaceBatch:
        """Render ``n_identities x per_identity`` faces with all their labels.

        Parameters
        ----------
        n_identities, per_identity : int
            Identities ``identity_offset .. identity_offset + n_identities - 1``, each ``per_identity`` times
            (rows are grouped by identity).
        nuisance : {"none", "mild", "full"}
            Preset ranges for pose, light, background, scale/shift, blur, noise, JPEG and resolution.
        expression : None, emotion name, "random", dict of AU intensities, or a list of these (one per image)
            ``{"AU12": 0.8, "AU06L": 0.5}``; emotions are :data:`facelab.synth.EMOTIONS`.
        occlusion : None, "sunglasses", "scarf", "mask", "hand", "block", "pixels" or "random"
        occlusion_fraction : float in [0, 1], optional
            Share of the face's pixels to cover, for "block", "pixels" and "scarf".
        makeup : None, "random", or dict such as ``{"lipstick": "red", "eyeshadow": "blue"}``
            (kinds: lipstick, eyeshadow, eyeliner, blush; colours in :data:`MAKEUP_COLOURS`).
        generator : torch.Generator, optional
            CPU generator for the per-image randomness; by default the world's own stream (a fresh world with
            the same seed replays the same calls to the same pixels).
        identities : sequence of int, optional
            Explicit identity indices (overrides n_identities/identity_offset).
        glasses, beard : bool, optional
            Force glasses/beard on or off (default: each identity's own).
        **overrides
            Per-factor values or (low, high) ranges replacing the preset: yaw, pitch, roll (degrees), light_azimuth,
            light_elevation, light_intensity, ambient, scale, shift, blur, noise, jpeg, resolution, gaze.

        Returns
        -------
        FaceBatch
        """
        if identities is None:
            for name, v in (("n_identities", n_identities), ("per_identity", per_identity)):
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                    raise ValueError(f"{name} must be a positive integer, got {v!r}")
            if not isinstance(identity_offset, (int, np.integer)) or identity_offset < 0:
                raise ValueError(f"identity_offset must be a non-negative integer, got {identity_offset!r}")
            ids = np.repeat(np.arange(identity_offset, identity_offset + n_identities), per_identity)
        else:
            ids = np.asarray(list(identities), dtype=np.int64)
            if ids.size == 0 or (ids < 0).any():
                raise ValueError("identities must be a non-empty sequence of non-negative integers")
            if isinstance(per_identity, (int, np.integer)) and per_identity > 1:
                ids = np.repeat(ids, per_identity)
        self._check_result_size(len(ids), "FaceWorld.sample", "Stream it instead: facelab.synth.SyntheticFaceStream("
                                "seed, size, n_identities, per_identity, batch_size=...) renders it batch by batch "
                                "(or call sample() on slices of the identities).")
        g = generator if generator is not None else self._generator
        scene, info = self._scene(ids, g, nuisance, expression, occlusion, occlusion_fraction, makeup, glasses,
                                  beard, overrides)
        out = render(scene, self.size, style=self.style)
        labels = self._labels(ids, scene, info, out)
        return FaceBatch(out.images, labels, out.landmarks, out.masks, out.face)

    # ------------------------------------------------------------------ video
    def video(self, identity: int = 0, duration_s: float = 5.0, fps: float = 30.0, events="random", ppg=None,
              ppg_fs: float | None = None, ppg_amplitude: float = 0.012, blinks: bool = True,
              head_motion: bool = True, nuisance: str = "none", makeup=None, glasses: bool | None = None,
              beard: bool | None = None, generator: torch.Generator | None = None, chunk: int = 128, **overrides):
        """Render a video of one person with expression events, blinks, head motion and an optional pulse.

        Parameters
        ----------
        identity : int
        duration_s, fps : float
            Clip length (seconds) and frame rate.
        events : "random", None, or list of dicts
            Each ``{"kind": "micro"|"macro", "emotion": "happy" (or "aus": {...}), "onset": s, "apex": s,
            "offset": s, "intensity": 0..1}``; micro-expressions last < 0.5 s (intensity <= 0.6), macro 0.5-4 s.
        ppg : array, optional
            A PPG waveform (one sample per frame, or sampled at ``ppg_fs`` Hz) that modulates skin colour
            (mostly the green channel) by ``ppg_amplitude`` (relative) per standard deviation.
        blinks, head_motion : bool
        nuisance : {"none", "mild", "full"}
            Drawn once for the clip (light, background, degradations), plus a base pose.
        chunk : int
            Frames rendered per batch (memory bound).

        Returns
        -------
        FaceVideo
        """
        from facelab.synth import video as V

        if not (isinstance(duration_s, (int, float, np.integer, np.floating)) and not isinstance(duration_s, bool)
                and 0 < duration_s < math.inf):
            raise ValueError(f"duration_s must be a positive, finite number of seconds, got {duration_s!r}")
        if not (isinstance(fps, (int, float, np.integer, np.floating)) and 0 < fps <= 1000):
            raise ValueError(f"fps must be a positive frame rate up to 1000, got {fps!r}")
        if isinstance(identity, bool) or not isinstance(identity, (int, np.integer)) or identity < 0:
            raise ValueError(f"identity must be a non-negative integer, got {identity!r}")
        if not (0 <= ppg_amplitude <= 0.2):
            raise ValueError(f"ppg_amplitude must lie in [0, 0.2], got {ppg_amplitude}")
        T = int(round(duration_s * fps))
        if T < 2:
            raise ValueError(f"a {duration_s} s clip at {fps} fps has fewer than 2 frames")
        self._check_result_size(T, f"FaceWorld.video({duration_s:g} s at {fps:g} fps)",
                                "Render it as shorter clips (several video() calls with a smaller duration_s, "
                                "processed one at a time), or lower fps or the world's size.")
        g = generator if generator is not None else self._generator
        if isinstance(events, str):
            if events != "random":
                raise ValueError(f"events must be 'random', None or a list of dicts, got {events!r}")
            events = V.random_events(duration_s, g, fps)
        evs = V.validate_events(events or [], duration_s, fps)
        blink_list = V.blink_times(duration_s, fps, g) if blinks else []
        traj, emotion = V.au_trajectory(T, evs, blink_list)
        motion = V.head_motion(T, fps, g) if head_motion else torch.zeros(T, 3)
        pulse = None
        gain = torch.ones(T, 3)
        if ppg is not None:
            pulse = V.ppg_per_frame(ppg, T, fps, ppg_fs)
            # more blood volume -> more absorption, strongest in green (haemoglobin)
            gain = 1 - ppg_amplitude * torch.tensor(pulse, dtype=torch.float32)[:, None] * torch.tensor([0.35, 1.0, 0.5])
        base, info = self._scene(np.array([identity]), g, nuisance, None, None, None, makeup, glasses, beard,
                                 overrides)
        limits = torch.tensor([POSE_LIMITS["yaw"], POSE_LIMITS["pitch"], POSE_LIMITS["roll"]])
        pose = (base.pose.cpu() + motion).clamp(-limits, limits)
        frames, lms = self._render_clip(base, traj, pose, gain, chunk)
        ev_df = pd.DataFrame([{k: v for k, v in e.items() if not k.startswith("_")} for e in evs],
                             columns=["kind", "emotion", "onset", "apex", "offset", "onset_s", "apex_s", "offset_s",
                                      "intensity", "aus"])
        bl_df = pd.DataFrame(blink_list, columns=["onset", "apex", "offset"])
        labels = pd.DataFrame({"frame": np.arange(T), "time_s": np.arange(T) / fps, "emotion": emotion})
        au_max = traj.max(2).values.numpy()
        for k, name in enumerate(AU_NAMES):
            labels[name] = au_max[:, k].astype(np.float32)
        for name, k in (("yaw", Pose.YAW), ("pitch", Pose.PITCH), ("roll", Pose.ROLL)):
            labels[name] = pose[:, k].numpy()
        if pulse is not None:
            labels["ppg"] = pulse
        return V.FaceVideo(frames=frames, landmarks=lms, fps=float(fps), events=ev_df, blinks=bl_df, labels=labels,
                           ppg=pulse, identity=int(identity))

    def _render_clip(self, base: Scene, traj, pose, gain, chunk: int):
        """Frames (T, 3, H, W) and landmarks (T, 68, 2) of a clip: the one-image scene ``base`` with per-frame AU
        intensities ``traj``, pose and skin gain, rendered ``chunk`` frames at a time; frame t's pixel noise is
        seeded by the base seed + t."""
        frames, lms = [], []
        seed0 = int(base.seeds[0])
        dev = base.landmarks.device
        for start in range(0, len(traj), chunk):
            sl = slice(start, min(len(traj), start + chunk))
            n = sl.stop - sl.start
            sc = Scene(**{key: v.expand(n, *v.shape[1:]) if isinstance(v, torch.Tensor) and key != "layers" else v
                          for key, v in base.__dict__.items()})
            sc.aus = traj[sl].to(dev)
            sc.landmarks = apply_aus(base.neutral.expand(n, -1, -1), sc.aus, gain=au_gain(self.style))
            sc.pose = pose[sl].to(dev)
            sc.skin_gain = gain[sl].to(dev)
            sc.seeds = torch.arange(sl.start, sl.stop, device=dev) + seed0
            out = render(sc, self.size, style=self.style)
            frames.append(out.images)
            lms.append(out.landmarks)
        return torch.cat(frames), torch.cat(lms)

    def _check_result_size(self, n_images: int, what: str, instead: str) -> None:
        """Refuse a request of ``n_images`` rendered images (float RGB + two bool masks + landmarks) larger than
        :func:`facelab.io.max_batch_bytes`."""
        from facelab.io import check_batch_bytes

        per_image = self.size * self.size * (3 * 4 + 2) + 68 * 2 * 4
        check_batch_bytes(float(n_images) * per_image, f"{what} ({n_images:,} images of {self.size} px)",
                          device=self.device, instead=instead)

    # ------------------------------------------------------------------ scene construction
    def _preset(self, nuisance, overrides):
        if nuisance not in NUISANCE_PRESETS:
            raise ValueError(f"unknown nuisance preset {nuisance!r}: expected one of {', '.join(NUISANCE_PRESETS)}")
        p = dict(NUISANCE_PRESETS[nuisance])
        known = set(p) - {"background"}
        for k, v in overrides.items():
            if k not in known:
                raise ValueError(f"unknown argument {k!r}; factors that can be overridden: {', '.join(sorted(known))}")
            if isinstance(v, (np.ndarray, torch.Tensor)):
                v = v.tolist()                                          # a 0-d array is a number
            if isinstance(v, (tuple, list)):
                v = tuple(v)
                if len(v) != 2:
                    raise ValueError(f"{k} must be a number or a (low, high) range, got {len(v)} values: {v!r}")
                p[k] = v
            else:
                p[k] = (v, v)
        for k, lim in POSE_LIMITS.items():
            _check_range(k, p[k], -lim, lim)
        _check_range("light_azimuth", p["light_azimuth"], -180, 180)
        _check_range("light_elevation", p["light_elevation"], -90, 90)
        _check_range("light_intensity", p["light_intensity"], 0, 3)
        _check_range("ambient", p["ambient"], 0, 1)
        _check_range("scale", p["scale"], 0.5, 1.5)
        _check_range("shift", p["shift"], -0.5, 0.5)
        _check_range("blur", p["blur"], 0, 10)
        _check_range("noise", p["noise"], 0, 1)
        _check_range("jpeg", p["jpeg"], 1, 100)
        _check_range("resolution", p["resolution"], 0.1, 1)
        _check_range("gaze", p["gaze"], -1, 1)
        return p

    def _scene(self, ids, g, nuisance, expression, occlusion, occlusion_fraction, makeup, glasses, beard,
               overrides, aus=None, pose=None):
        N = len(ids)
        dev = self.device
        p = self._preset(nuisance, overrides)

        def U(rng, *shape):
            lo, hi = rng
            return lo + (hi - lo) * torch.rand(N, *shape, generator=g)

        ident = self.identities(ids.tolist())
        # expression
        info = {}
        if aus is None:
            aus, emotions = self._expressions(expression, N, g)
        else:
            emotions = ["custom"] * N
        info["emotion"] = emotions
        lm = apply_aus(ident.landmarks, aus, gain=au_gain(self.style))
        # pose, light, placement
        if pose is None:
            pose = torch.stack([U(p["yaw"]), U(p["pitch"]), U(p["roll"])], 1)
        temp = U(p["colour_temperature"])
        light = torch.stack([U(p["light_azimuth"]), U(p["light_elevation"]), U(p["light_intensity"]), U(p["ambient"]),
                             1 + temp, 1 + 0.2 * temp, 1 - temp], 1)           # the columns of fields.Light
        sim = torch.stack([U(p["scale"]), U(p["shift"]), U(p["shift"])], 1)   # fields.Similarity
        background, bnoise, clutter = _background_params(p["background"], N, g, U)
        gaze = torch.stack([U(p["gaze"]), U(p["gaze"]) * 0.4], 1)
        # accessories
        gl = ident.glasses.clone()
        if glasses is not None:
            gl[:, Glasses.WORN] = float(bool(glasses))
        bd = ident.beard.clone()
        if beard is not None:
            style = bd[:, Beard.STYLE]
            full = torch.full_like(style, float(Beard.FULL))
            bd[:, Beard.STYLE] = torch.where(style > 0, style, full) if beard else 0.0
        # occlusion
        occ, occ_prm = self._occlusion(occlusion, occlusion_fraction, N, g, lm, ident)
        # makeup
        mk, mk_names = self._makeup(makeup, N, g)
        info["makeup"] = mk_names
        degrade = torch.stack([U(p["resolution"]), U(p["blur"]), U(p["noise"]), U(p["jpeg"]).round()], 1)   # Degrade
        # in the presets each degradation hits about half of the images (all of them when asked for explicitly)
        if nuisance != "none":
            off = torch.rand(N, 4, generator=g) < 0.5
            for k, (name, neutral) in enumerate(zip(Degrade.NAMES, Degrade.NEUTRAL)):
                if name not in overrides:
                    degrade[:, k] = torch.where(off[:, k], torch.full_like(degrade[:, k], neutral), degrade[:, k])
        seeds = torch.randint(0, 2**31 - 1, (N,), generator=g)
        sc = Scene(landmarks=lm, aus=aus, skin=ident.skin, lip=ident.lip, hair=ident.hair, eye=ident.eye,
                   hair_style=ident.hair_style, hair_shape=ident.hair_shape, brow=ident.brow, face=ident.face,
                   beard=bd, glasses=gl, texture=ident.texture, pose=pose, similarity=sim, light=light,
                   background=background, background_noise=bnoise, clutter=clutter, gaze=gaze, occlusion=occ,
                   occlusion_param=occ_prm, makeup=mk, degrade=degrade, skin_gain=torch.ones(N, 3), seeds=seeds,
                   layers=None, layer_index=None, neutral=ident.landmarks)
        info["identity"] = ident
        sc = _to(sc, dev)
        sc.layers, sc.layer_index = self._layers(ids, ident)
        return sc, info

    def _expressions(self, expression, N, g):
        if isinstance(expression, (list, tuple)):
            if len(expression) != N:
                raise ValueError(f"a list of expressions needs one entry per image ({N}), got {len(expression)}")
            parts = [self._expressions(e, 1, g) for e in expression]
            return torch.cat([a for a, _ in parts]), [e for _, es in parts for e in es]
        if expression is None or expression == "neutral":
            return torch.zeros(N, len(AU_NAMES), 2), ["neutral"] * N
        if isinstance(expression, Mapping):
            return au_vector(expression)[None].repeat(N, 1, 1), ["custom"] * N
        if expression == "random":
            k = torch.randint(0, len(EMOTIONS), (N,), generator=g)
            inten = 0.45 + 0.55 * torch.rand(N, generator=g)
            return _emotion_table()[k] * inten[:, None, None], [EMOTIONS[i] for i in k.tolist()]
        if isinstance(expression, str) and expression in EMOTION_PROTOTYPES:
            return emotion_vector(expression)[None].repeat(N, 1, 1), [expression] * N
        raise ValueError(f"unknown expression {expression!r}: expected None, 'random', one of {', '.join(EMOTIONS)}, "
                         "a dict of AU intensities, or a list of these")

    def _occlusion(self, occlusion, fraction, N, g, lm, ident):
        kinds = OCCLUSIONS[1:]
        if fraction is not None:
            _check_range("occlusion_fraction", fraction, 0.0, 1.0)
            if occlusion not in ("block", "pixels", "scarf"):
                raise ValueError("occlusion_fraction applies to occlusion='block', 'pixels' or 'scarf', "
                                 f"got occlusion={occlusion!r}")
        if occlusion is None or occlusion == "none":
            occ = torch.zeros(N, dtype=torch.long)
        elif occlusion == "random":
            occ = torch.randint(1, len(OCCLUSIONS), (N,), generator=g)
        elif occlusion in kinds:
            occ = torch.full((N,), OCCLUSIONS.index(occlusion), dtype=torch.long)
        else:
            raise ValueError(f"unknown occlusion {occlusion!r}: expected None, 'random' or one of {', '.join(kinds)}")
        prm = torch.rand(N, 8, generator=g)
        u = torch.rand(N, 8, generator=g)
        for k, name in enumerate(OCCLUSIONS):
            sel = occ == k
            if not bool(sel.any()):
                continue
            if name in ("block", "pixels"):
                f = torch.full((int(sel.sum()),), float(fraction)) if fraction is not None else \
                    0.1 + 0.5 * u[sel, 0]
                prm[sel, 0] = f                                   # BlockParam.FRACTION, PixelsParam.FRACTION
            elif name == "scarf":
                L = lm[sel]
                # AR-database scarves cover about 40% of the face
                f = torch.full((L.shape[0],), float(fraction)) if fraction is not None else 0.36 + 0.08 * u[sel, 0]
                prm[sel, ScarfParam.TOP] = _scarf_top(L, ident.face[sel], f)
                prm[sel, ScarfParam.RGB] = _SCARF_COLOURS[(u[sel, 1] * len(_SCARF_COLOURS)).long().clamp(max=5)]
            elif name == "mask":
                prm[sel, MaskParam.TOP] = -0.01 + 0.03 * u[sel, 0]
                prm[sel, MaskParam.RGB] = _MASK_COLOURS[(u[sel, 1] * len(_MASK_COLOURS)).long().clamp(max=3)]
            elif name == "hand":
                L = lm[sel]
                side = torch.where(u[sel, 0] < 0.5, -1.0, 1.0)
                # over the mouth or the nose/eye
                target = torch.where(u[sel, 1:2] < 0.5, L[:, LOWER_LIP_BOTTOM], L[:, int(NOSE_BRIDGE[2])])
                prm[sel, HandParam.X] = target[:, 0] + side * (0.1 + 0.1 * u[sel, 2])
                prm[sel, HandParam.Y] = target[:, 1] + 0.05 * (u[sel, 3] - 0.5)
                prm[sel, HandParam.ANGLE] = side * (0.2 + 0.7 * u[sel, 4])
                prm[sel, HandParam.SCALE] = 0.8 + 0.3 * u[sel, 5]
                prm[sel, HandParam.TONE] = u[sel, 6]
        return occ, prm

    def _makeup(self, makeup, N, g):
        mk = torch.zeros(N, 16)
        names = {k: ["none"] * N for k in MAKEUP_KINDS}
        if makeup is None:
            return mk, names
        if makeup == "random":
            # each kind is worn with probability 0.45, in a uniformly drawn colour, at strength 0.7 to 1
            worn = torch.rand(N, len(MAKEUP_KINDS), generator=g) < 0.45
            pick = torch.rand(N, len(MAKEUP_KINDS), generator=g)
            strength = 0.7 + 0.3 * torch.rand(N, len(MAKEUP_KINDS), generator=g)
            for j, kind in enumerate(MAKEUP_KINDS):
                keys = list(MAKEUP_COLOURS[kind])
                c = (pick[:, j] * len(keys)).long().clamp(max=len(keys) - 1)
                mk[:, Makeup.rgb(kind)] = torch.tensor(list(MAKEUP_COLOURS[kind].values()))[c] * worn[:, j, None]
                mk[:, Makeup.alpha(kind)] = strength[:, j] * worn[:, j]
                names[kind] = [keys[i] if w else "none" for i, w in zip(c.tolist(), worn[:, j].tolist())]
            return mk, names
        if not isinstance(makeup, Mapping):
            raise ValueError(f"makeup must be None, 'random' or a dict such as {{'lipstick': 'red'}}, got {makeup!r}")
        for kind, colour in makeup.items():
            if kind not in MAKEUP_COLOURS:
                raise ValueError(f"unknown makeup kind {kind!r}: expected one of {', '.join(MAKEUP_KINDS)}")
            if colour is None or colour == "none":
                continue
            if colour not in MAKEUP_COLOURS[kind]:
                raise ValueError(f"unknown {kind} colour {colour!r}: expected one of {', '.join(MAKEUP_COLOURS[kind])}")
            mk[:, Makeup.rgb(kind)] = torch.tensor(MAKEUP_COLOURS[kind][colour])
            mk[:, Makeup.alpha(kind)] = 1.0
            names[kind] = [colour] * N
        return mk, names

    # ------------------------------------------------------------------ labels
    def _labels(self, ids, sc, info, out) -> pd.DataFrame:
        aus = sc.aus.detach().cpu()
        pose = sc.pose.detach().cpu().numpy()
        light = sc.light.detach().cpu().numpy()
        deg = sc.degrade.detach().cpu().numpy()
        ident = info["identity"]
        cols = {"identity": np.asarray(ids, dtype=np.int64), "emotion": info["emotion"]}
        au_max = aus.max(2).values.numpy()
        for k, name in enumerate(AU_NAMES):
            cols[name] = au_max[:, k].astype(np.float32)
        diff = (aus[:, :, 0] - aus[:, :, 1]).numpy()
        uni = [""] * len(ids)
        for i, k in zip(*np.nonzero(np.abs(diff) > 1e-6)):
            uni[i] += ("," if uni[i] else "") + AU_NAMES[k] + ("R" if diff[i, k] > 0 else "L")
        cols["unilateral"] = uni
        cols["yaw"], cols["pitch"], cols["roll"] = pose[:, Pose.YAW], pose[:, Pose.PITCH], pose[:, Pose.ROLL]
        cols["light_azimuth"], cols["light_elevation"], cols["light_intensity"] = \
            light[:, Light.AZIMUTH], light[:, Light.ELEVATION], light[:, Light.INTENSITY]
        cols["occlusion"] = [OCCLUSIONS[k] if k else "none" for k in sc.occlusion.tolist()]
        cols["occluded_fraction"] = out.occluded_fraction.detach().cpu().numpy().astype(np.float32)
        for kind in MAKEUP_KINDS:
            cols[kind] = info["makeup"][kind]
        cols["caption"] = [caption({k: info["makeup"][k][i] for k in MAKEUP_KINDS}) for i in range(len(ids))]
        cols["glasses"] = (sc.glasses[:, Glasses.WORN] > 0.5).cpu().numpy()
        cols["beard"] = np.array(Beard.STYLES)[sc.beard[:, Beard.STYLE].long().cpu().numpy()]
        cols["hair_colour"] = ident.hair_name
        cols["eye_colour"] = ident.eye_name
        for k, name in zip((Degrade.RESOLUTION, Degrade.BLUR, Degrade.NOISE, Degrade.JPEG),
                           ("resolution", "blur", "noise", "jpeg_quality")):
            cols[name] = deg[:, k]
        return pd.DataFrame(cols)


_EMOTIONS_AU = None


def _emotion_table() -> torch.Tensor:
    """(len(EMOTIONS), n_AU, 2) AU intensities of the emotion prototypes at full intensity."""
    global _EMOTIONS_AU
    if _EMOTIONS_AU is None:
        _EMOTIONS_AU = torch.stack([emotion_vector(e) for e in EMOTIONS])
    return _EMOTIONS_AU


def caption(makeup: Mapping[str, str]) -> str:
    """Text description of the makeup: 'a face of a person with red lipstick and blue eyeshadow'."""
    parts = [f"{c} {k}" for k, c in makeup.items() if c and c != "none"]
    if not parts:
        return "a face of a person"
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"a face of a person with {text}"


def _background_params(bgk: str, N: int, g, U):
    """Background parameters of N images for a preset's background kind ("plain", "smooth", "cluttered"):
    (background (N, 12) ``fields.Background``, noise (N, 3, 6, 6), clutter (N, 3, 8) ``fields.Clutter``), drawn
    from ``g`` (``U(range)`` draws N uniform values)."""
    if bgk == "plain":
        background = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0, 1, 0, 0.25, 0.27, 0.32]).repeat(N, 1)
        bnoise = torch.zeros(N, 3, 6, 6)
        clutter = torch.zeros(N, 3, 8)
    else:
        ang = U((0, 2 * math.pi))
        base = torch.rand(N, 2, 3, generator=g) * 0.8 + 0.1
        grey = base.mean(2, keepdim=True)
        base = (grey + (base - grey) * (0.25 + 0.4 * torch.rand(N, 2, 1, generator=g))).reshape(N, 6)
        background = torch.cat([base, ang.cos()[:, None], ang.sin()[:, None],
                                U((0.02, 0.06) if bgk == "smooth" else (0.04, 0.12))[:, None],
                                torch.rand(N, 3, generator=g) * 0.7 + 0.1], 1)
        lum = torch.randn(N, 1, 6, 6, generator=g)
        bnoise = lum + 0.35 * torch.randn(N, 3, 6, 6, generator=g)
        clutter = torch.rand(N, 3, 8, generator=g)
        cg = clutter[..., Clutter.RGB].mean(-1, keepdim=True)
        clutter[..., Clutter.RGB] = cg + (clutter[..., Clutter.RGB] - cg) * 0.5
        clutter[..., Clutter.CENTRE] = clutter[..., Clutter.CENTRE] * 2 - 1
        clutter[..., Clutter.RADII] = clutter[..., Clutter.RADII] * 0.5 + 0.1
        clutter[..., Clutter.ALPHA] = (clutter[..., Clutter.ALPHA] < (0.0 if bgk == "smooth" else 0.7)).float()
    return background, bnoise, clutter


def _scarf_top(L, face, fraction):
    """Frontal-frame y of a straight scarf edge that covers ``fraction`` of the face region (per face)."""
    from facelab.synth.render import _polar_face, _polar_lookup, _ramp

    H = 128
    xs = (torch.arange(H, dtype=torch.float32) + 0.5) * (2.0 / H) - 1
    centre, table, _ = _polar_face(L, face)
    a = _ramp(_polar_lookup(xs.view(1, 1, 1, H), xs.view(1, 1, H, 1), centre, table), 2.0 / H)[:, 0]
    rows = a.sum(2)                                                   # (n, H)
    from_bottom = rows.flip(1).cumsum(1).flip(1) / rows.sum(1, keepdim=True)   # share at or below each row
    fraction = torch.as_tensor(fraction, dtype=torch.float32).reshape(-1, 1)
    idx = (from_bottom >= fraction).float().cumsum(1).argmax(1)       # last row with share >= fraction
    return xs[idx] - 1.0 / H


def _to(sc: Scene, device) -> Scene:
    if str(device) == "cpu":
        return sc
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in sc.__dict__.items()}
    return Scene(**kw)
