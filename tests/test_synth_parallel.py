"""Chunks rendered side by side (facelab.synth.render.map_chunks) give the same images as one after the other."""

import pytest
import torch

import facelab.synth.render as R
from facelab.synth import FaceWorld


def _serial(fn, chunks):
    return [fn(c) for c in chunks]


@pytest.mark.parametrize("style", ["cartoon", "photo"])
def test_parallel_chunks_match_serial_bit_for_bit(style, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(R, "CPU_CHUNK", 16)            # several chunks from a small batch
        out = {}
        for mode in ("parallel", "serial"):
            if mode == "serial":
                monkeypatch.setattr(R, "map_chunks", _serial)
            w = FaceWorld(seed=5, size=64, style=style)
            g = torch.Generator().manual_seed(1)
            out[mode] = w.sample(identities=list(range(40)) + [0, 1, 2], nuisance="full", expression="random",
                                 occlusion="random", makeup="random", generator=g)
        a, b = out["parallel"], out["serial"]
        assert a.images.shape == (43, 3, 64, 64)
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.landmarks, b.landmarks)
        assert torch.equal(a.masks, b.masks) and torch.equal(a.face_masks, b.face_masks)
        assert a.labels.equals(b.labels)
    finally:
        torch.set_num_threads(threads)


def test_map_chunks_restores_threads_and_raises():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = R.map_chunks(lambda c: (c, torch.get_num_threads()), [1, 2, 3])
        assert [c for c, _ in seen] == [1, 2, 3]                   # order kept
        assert all(t == 1 for _, t in seen)                        # one intra-op thread per chunk
        assert torch.get_num_threads() == 2                        # restored

        def boom(c):
            raise ValueError(f"chunk {c}")

        with pytest.raises(ValueError, match="chunk"):
            R.map_chunks(boom, [1, 2])
        assert torch.get_num_threads() == 2
        assert R.map_chunks(lambda c: c * 2, [4]) == [8]           # one chunk: no pool
    finally:
        torch.set_num_threads(threads)
