"""A fast stand-in for FaceWorld in the micro tests: dark Gaussian spots at 68 landmarks on a smooth texture, with
AUs moving landmark groups. It honours the part of ``FaceWorld.sample`` the corpus uses (identities, a list of AU
dicts, nuisance, generator -> images, landmarks, face_masks), so corpus/spotting tests run in seconds."""

from types import SimpleNamespace

import numpy as np
import torch

_MOVES = {  # AU -> (landmark indices, (dx, dy) in face-width units at intensity 1)
    "AU01": (range(17, 27), (0.0, -0.08)), "AU02": (range(17, 27), (0.0, -0.06)),
    "AU04": (range(17, 27), (0.0, 0.05)), "AU05": (range(36, 48), (0.0, -0.03)),
    "AU06": (range(40, 48), (0.0, -0.02)), "AU07": (range(36, 48), (0.0, 0.02)),
    "AU09": (range(27, 36), (0.0, -0.03)), "AU10": (range(48, 55), (0.0, -0.04)),
    "AU12": ((48, 54, 60, 64), (0.07, -0.06)), "AU14": ((48, 54), (-0.02, 0.0)),
    "AU15": ((48, 54, 60, 64), (0.0, 0.06)), "AU17": (range(5, 12), (0.0, -0.03)),
    "AU20": ((48, 54, 60, 64), (0.07, 0.01)), "AU23": (range(48, 68), (0.0, 0.01)),
    "AU25": (range(56, 60), (0.0, 0.04)), "AU26": (range(5, 12), (0.0, 0.06)),
    "AU45": (range(37, 39), (0.0, 0.03)),
}


def _base_shape():
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([-0.45 * np.cos(t), 0.15 + 0.45 * np.sin(t)], 1)
    brows = np.stack([np.r_[np.linspace(-0.38, -0.08, 5), np.linspace(0.08, 0.38, 5)], np.full(10, -0.25)], 1)
    nose = np.r_[np.stack([np.zeros(4), np.linspace(-0.15, 0.05, 4)], 1),
                 np.stack([np.linspace(-0.08, 0.08, 5), np.full(5, 0.1)], 1)]
    eye = lambda cx: np.stack([cx + 0.08 * np.cos(np.linspace(0, 2 * np.pi, 7)[:-1]),  # noqa: E731
                               -0.12 + 0.03 * np.sin(np.linspace(0, 2 * np.pi, 7)[:-1])], 1)
    mouth_o = np.stack([0.2 * np.cos(np.linspace(np.pi, -np.pi, 13)[:-1]),
                        0.3 + 0.06 * np.sin(np.linspace(np.pi, -np.pi, 13)[:-1])], 1)
    mouth_i = np.stack([0.12 * np.cos(np.linspace(np.pi, -np.pi, 9)[:-1]),
                        0.3 + 0.02 * np.sin(np.linspace(np.pi, -np.pi, 9)[:-1])], 1)
    return np.concatenate([jaw, brows, nose, eye(-0.22), eye(0.22), mouth_o, mouth_i])  # (68, 2)


class StubWorld:
    """``sample(identities, expression=[AU dict,...], nuisance, generator)`` with the FaceBatch fields used."""

    def __init__(self, size: int = 64):
        self.size = size
        self.shape = _base_shape()
        rng = np.random.default_rng(0)
        import cv2

        tex = cv2.GaussianBlur(rng.uniform(0, 1, (size, size)).astype(np.float32), (0, 0), 2.0)
        self.texture = 0.5 + 0.3 * (tex - tex.mean()) / (tex.std() + 1e-9)
        yy, xx = np.mgrid[0:size, 0:size]
        self.grid = np.stack([xx, yy], -1).astype(np.float32)

    def landmarks(self, aus: dict) -> np.ndarray:
        lm = self.shape.copy()
        for au, v in aus.items():
            idx, (dx, dy) = _MOVES.get(au[:4], ((), (0, 0)))
            for i in idx:
                sx = np.sign(lm[i, 0]) if dx else 0.0
                lm[i] += v * np.array([dx * sx, dy])
        return (lm * 0.7 + 0.5) * self.size

    def image(self, lm: np.ndarray) -> np.ndarray:
        d2 = ((self.grid[:, :, None, :] - lm[None, None]) ** 2).sum(-1)
        spots = np.exp(-d2 / (2 * 1.3**2)).sum(-1)
        g = np.clip(self.texture - 0.5 * spots, 0, 1)
        return np.stack([g, g, g])

    def sample(self, identities, expression, nuisance="none", generator=None, **_):
        lms = np.stack([self.landmarks(e or {}) for e in expression]).astype(np.float32)
        imgs = np.stack([self.image(lm) for lm in lms]).astype(np.float32)
        masks = np.ones((len(lms), 1, self.size, self.size), bool)
        return SimpleNamespace(images=torch.from_numpy(imgs), landmarks=torch.from_numpy(lms),
                               face_masks=torch.from_numpy(masks))

    def video(self, identity=0, duration_s=5.0, fps=30.0, events=(), ppg=None, ppg_fs=None, ppg_amplitude=0.012,
              blinks=True, head_motion=True, nuisance="none", generator=None, **_):
        """``FaceWorld.video`` stand-in: events in seconds with ``aus`` and ``intensity``, the world's blink times
        (drawn first from ``generator``), a darker skin where the PPG is high; head motion shifts the landmarks."""
        from facelab.synth import video as V

        T = int(round(duration_s * fps))
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        blink_list = V.blink_times(duration_s, fps, g) if blinks else []
        aus = [dict() for _ in range(T)]
        spans = [(int(round(e["onset"] * fps)), int(round(e["apex"] * fps)), int(round(e["offset"] * fps)),
                  {k: v * float(e.get("intensity", 0.5)) for k, v in e["aus"].items()}) for e in events or ()]
        spans += [(on, ap, off, {"AU45": 1.0}) for on, ap, off in blink_list]
        for on, ap, off, a in spans:
            env = V.envelope(T, on, ap, off)
            for f in np.flatnonzero(env > 0):
                for k, v in a.items():
                    aus[f][k] = max(aus[f].get(k, 0.0), env[f] * v)
        lms = np.stack([self.landmarks(a) for a in aus]).astype(np.float32)
        if head_motion:
            lms += (1.5 * np.sin(np.arange(T) / fps * 2 * np.pi * 0.2))[:, None, None].astype(np.float32)
        imgs = np.stack([self.image(lm) for lm in lms]).astype(np.float32)
        pulse = None
        if ppg is not None:
            pulse = V.ppg_per_frame(ppg, T, fps, ppg_fs)
            imgs = np.clip(imgs * (1 - ppg_amplitude * pulse[:, None, None, None]), 0, 1).astype(np.float32)
        import pandas as pd

        return SimpleNamespace(frames=torch.from_numpy(imgs), landmarks=torch.from_numpy(lms), fps=float(fps),
                               blinks=pd.DataFrame(blink_list, columns=["onset", "apex", "offset"]), ppg=pulse)
