"""The photo style's LFW relief (issue 26 part 1): more real people behind the photofits' low frequencies.

The appearance model holds the low-frequency luminance relief of the LFW crops of ``skimage.data.lfw_subset`` (faces
that dlib finds and face-api does not read as happy); every identity's detail map takes its low frequencies from one
of them, chosen from numbers the identity already has, so its other choices stay as they were.
"""

import torch

from facelab.synth import appearance as A
from facelab.synth.identity import make_identities


def _coef(n=40, seed=3):
    return torch.rand(n, A.n_components(), generator=torch.Generator().manual_seed(seed))


def test_lfw_relief_in_the_model():
    mdl = A.appearance_model()
    relief = mdl["lfw_relief"]
    assert relief.dim() == 3 and relief.shape[1] == relief.shape[2] == A.SETTINGS["lfw_resolution"]
    assert 50 <= relief.shape[0] <= 95                                      # most of the 100 crops, no smiles
    assert torch.isfinite(relief).all() and relief.min() >= 0.3 - 1e-3 and relief.max() <= 1.8 + 1e-2
    R = relief.shape[-1]
    corners = torch.cat([relief[:, :4, :4].flatten(), relief[:, -4:, -4:].flatten()])
    assert torch.allclose(corners, torch.ones_like(corners), atol=1e-3)     # 1 outside the face region
    centre = relief[:, R // 4:3 * R // 4, R // 4:3 * R // 4]
    assert float(centre.std()) > 0.05                                       # real shading inside the face
    # different people: no two reliefs alike
    flat = (relief - relief.mean(0)).flatten(1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    corr = flat @ flat.T - 2 * torch.eye(len(flat))
    assert float(corr.max()) < 0.97


def test_pool_choice_is_uniform_and_independent_of_the_second_face():
    coef = torch.rand(20000, A.N_COEF, generator=torch.Generator().manual_seed(0))
    k, flip = A.pool_choice(coef, 22, 71)
    assert k.min() >= 0 and k.max() < 71 and flip.dtype == torch.bool
    counts = torch.bincount(k, minlength=71).float()
    assert float(counts.min()) > 0.6 * 20000 / 71 and float(counts.max()) < 1.4 * 20000 / 71
    assert 0.45 < float(flip.float().mean()) < 0.55
    second = (coef[:, 10] * 22).long()
    for s in (0, 7, 21):                                                    # the same second face, any LFW face
        assert len(torch.unique(k[second == s])) > 60
    k2, flip2 = A.pool_choice(coef.clone(), 22, 71)
    assert torch.equal(k, k2) and torch.equal(flip, flip2)


def test_relief_changes_only_the_low_frequencies_inside_the_face(monkeypatch):
    coef = _coef()
    with_pool = A.sample_textures(coef)
    monkeypatch.setattr(A, "LFW_RELIEF", 0.0)
    without = A.sample_textures(coef)
    monkeypatch.undo()
    assert with_pool.shape == without.shape and torch.isfinite(with_pool).all()
    assert torch.equal(A.sample_textures(coef), with_pool)                  # deterministic, the bank cached per setting
    R = with_pool.shape[-1]
    assert torch.allclose(with_pool[..., :6, :], without[..., :6, :], atol=2e-2)   # above the face: unchanged
    diff = (with_pool - without).abs().mean((0, 1))
    assert float(diff[R // 3:2 * R // 3, R // 3:2 * R // 3].mean()) > 0.02      # the face's shading: changed
    # the relief is grey: it changes the brightness, and the colour of the skin only a little
    grey_w, grey_o = with_pool.mean(1, keepdim=True), without.mean(1, keepdim=True)
    chroma_change = ((with_pool / grey_w) - (without / grey_o)).abs()[..., R // 3:2 * R // 3, R // 3:2 * R // 3]
    assert float(chroma_change.mean()) < 0.1 * float(diff[R // 3:2 * R // 3, R // 3:2 * R // 3].mean()) + 0.01


def test_identities_take_their_relief_from_many_lfw_people():
    ident = make_identities(7, range(200), style="photo")
    n_faces = A.appearance_model()["faces"].shape[0]
    k, _ = A.pool_choice(ident.appearance, n_faces, A.appearance_model()["lfw_relief"].shape[0])
    assert len(torch.unique(k)) > 50
    again = make_identities(7, [5, 3], style="photo")
    assert torch.equal(again.appearance, ident.appearance[[5, 3]])
