"""Faster paths of the renderer give the same numbers, bit for bit, as the code they replaced.

* ``render`` lets each chunk composite and degrade its images in place in its rows of the batch's output; it used to
  render each chunk on its own and concatenate the results;
* ``_corrupted_pixels`` finds each image's threshold with ``kthvalue``; it used to sort all pixel values.
"""

from dataclasses import fields

import numpy as np
import pytest
import torch

import facelab.synth.render as R
from facelab.synth import FaceWorld

ALL = dict(nuisance="full", expression="random", occlusion="random", makeup="random")


@pytest.mark.parametrize("style", ["cartoon", "photo"])
def test_in_place_chunks_match_concatenated_chunks(style, monkeypatch):
    monkeypatch.setattr(R, "CPU_CHUNK", 16)                        # several chunks from a small batch
    w = FaceWorld(seed=3, size=64, style=style)
    ids = np.arange(100, 140)
    sc, _ = w._scene(ids, torch.Generator().manual_seed(9), "full", "random", "random", None, "random", None, None,
                     {})
    got = R.render(sc, 64, style)
    parts = [R._render(sc.select(c), 64, style) for c in R.chunk_slices(sc.n, "cpu")]     # the former path
    assert len(parts) == 3
    for f in fields(R.Rendered):
        assert torch.equal(getattr(got, f.name), torch.cat([getattr(p, f.name) for p in parts])), f.name


def test_corrupted_pixel_threshold_matches_a_full_sort():
    H = 32
    g = torch.Generator().manual_seed(0)
    face = torch.rand(12, 1, H, H, generator=g) < torch.linspace(0.0, 0.9, 12).view(-1, 1, 1, 1)   # one face empty
    fraction = torch.rand(12, generator=g)
    fraction[3] = 0.0                                             # k = 0: no pixel
    seeds = torch.arange(12) * 7
    hit, noise = R._corrupted_pixels(face, fraction, seeds, H)
    # the former code: the k-th smallest face value by a full sort
    u = R._noise(seeds, (4, H, H), face.device, offset=17, uniform=True)
    fm = face.flatten(1)
    vals = torch.where(fm, u[:, 0].flatten(1), torch.full_like(fm, 2.0, dtype=u.dtype))
    k = (fraction * fm.sum(1)).round().long()
    thr = torch.where(k > 0, vals.sort(1).values.gather(1, (k - 1).clamp_min(0)[:, None])[:, 0],
                      torch.full_like(k, -1.0, dtype=u.dtype))
    assert torch.equal(hit, u[:, :1] <= thr.view(-1, 1, 1, 1)) and torch.equal(noise, u[:, 1:])
    assert int(hit[3].sum()) == 0 and int(hit[0].sum()) == 0
    assert torch.equal((hit & face).flatten(1).sum(1), k)          # exactly k face pixels (values are distinct)
