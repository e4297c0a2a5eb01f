"""facelab.studies.synthetic_faces.expression_identity_shift: how far an expression moves a person for a recogniser."""

import numpy as np
import pytest

from facelab.models import load_embedder
from facelab.studies import synthetic_faces as study
from facelab.synth import FaceWorld


@pytest.fixture(scope="module")
def dlib():
    return load_embedder("dlib-resnet")


def test_table_shape_values_and_styles(dlib):
    tabs = {style: study.expression_identity_shift(FaceWorld(seed=3, size=112, style=style), dlib, per_emotion=3,
                                                   identity_offset=7000, seed=5)
            for style in ("cartoon", "photo")}
    for tab in tabs.values():
        assert list(tab.index) == ["happy", "sad", "angry", "fearful", "disgusted", "surprised", "all"]
        assert (tab.n.iloc[:-1] == 3).all() and tab.loc["all", "n"] == 18
        assert (tab.distance > 0.05).all() and (tab.distance < 1.5).all()        # moved, but not to another scale
        assert ((tab.rejected_lo <= tab.rejected) & (tab.rejected <= tab.rejected_hi)).all()
        assert tab.rejected.between(0, 1).all()
        np.testing.assert_allclose(tab.loc["all", "distance"], tab.distance.iloc[:-1].mean(), rtol=1e-5)
    # the photo style's expressions move people much further for dlib than the cartoon's (measured 0.44-0.58 vs
    # 0.21-0.27 per emotion on 40 people)
    assert tabs["photo"].loc["all", "distance"] > tabs["cartoon"].loc["all", "distance"] + 0.1


def test_deterministic_and_bad_input(dlib):
    world = FaceWorld(seed=3, size=112, style="cartoon")
    a = study.expression_identity_shift(world, dlib, per_emotion=1, seed=2)
    b = study.expression_identity_shift(FaceWorld(seed=3, size=112, style="cartoon"), dlib, per_emotion=1, seed=2)
    assert a.equals(b)
    with pytest.raises(ValueError, match="per_emotion must be a positive integer"):
        study.expression_identity_shift(world, dlib, per_emotion=0)
