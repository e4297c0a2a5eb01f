"""Tests of the synthetic face world (facelab.synth)."""

import numpy as np
import pytest
import torch

from facelab.synth import AU_NAMES, EMOTIONS, FaceWorld


@pytest.fixture(scope="module")
def world():
    return FaceWorld(seed=0, size=64)


def test_sample_shapes_ranges_and_labels(world):
    b = world.sample(n_identities=3, per_identity=2, nuisance="mild", expression="random", occlusion="random",
                     makeup="random")
    assert b.images.shape == (6, 3, 64, 64) and b.images.dtype == torch.float32
    assert float(b.images.min()) >= 0.0 and float(b.images.max()) <= 1.0
    assert b.landmarks.shape == (6, 68, 2)
    assert b.masks.shape == (6, 1, 64, 64) and b.masks.dtype == torch.bool
    images, labels = b
    assert list(labels["identity"]) == [0, 0, 1, 1, 2, 2]
    for col in ("emotion", "yaw", "pitch", "roll", "light_azimuth", "light_elevation", "light_intensity",
                "occlusion", "occluded_fraction", "lipstick", "eyeshadow", "eyeliner", "blush", "caption", *AU_NAMES):
        assert col in labels.columns, col
    assert labels[list(AU_NAMES)].to_numpy().min() >= 0 and labels[list(AU_NAMES)].to_numpy().max() <= 1
    assert set(labels["emotion"]) <= set(EMOTIONS)


def test_same_seed_same_pixels():
    a = FaceWorld(seed=3, size=64).sample(2, 2, nuisance="full", expression="random", occlusion="random")
    b = FaceWorld(seed=3, size=64).sample(2, 2, nuisance="full", expression="random", occlusion="random")
    assert torch.equal(a.images, b.images)
    assert a.labels.equals(b.labels)
