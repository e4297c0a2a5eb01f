"""facelab.photos: the catalogue of real labelled photos and the detect+align convenience."""

import numpy as np
import pytest

from facelab.photos import GROUP_IDENTITY, load_real_faces, real_photos


def test_catalogue():
    df = real_photos()
    assert list(df.columns) == ["name", "identity", "group", "path", "source", "license", "note"]
    assert (df.identity == "Barack Obama").sum() == 6
    assert df.note[df.identity == "Barack Obama"].str.contains("partial").sum() == 2
    assert set(df.identity) >= {"Joe Biden", "Eileen Collins", "Grace Hopper", GROUP_IDENTITY}
    assert df.group.sum() == 6 and len(df) == 15
    assert all(__import__("pathlib").Path(p).is_file() for p in df.path)
    assert len(real_photos(include_groups=False)) == 9


def test_load_real_faces_for_dlib_and_sface():
    a = load_real_faces("dlib-resnet")
    assert a.template == "dlib-150" and a.chips.shape == (len(a), 150, 150, 3) and a.chips.dtype == np.uint8
    single = a.table[~a.table.group]
    assert len(single) == 9 and (single.identity == "Barack Obama").sum() == 6 and single.partial.sum() == 2
    groups = a.table[a.table.group]
    assert len(groups) >= 15 and groups.identity.is_unique  # every group face is its own identity
    assert load_real_faces("dlib-resnet") is a  # cached
    b = load_real_faces("sface")
    assert b.template == "arcface-112" and b.chips.shape[1:] == (112, 112, 3)
    # group-face labels come from one reference detector, so they agree across pipelines
    assert set(a.table.identity) <= set(b.table.identity)
    with pytest.raises(ValueError, match="template"):
        load_real_faces("vgg-face")
