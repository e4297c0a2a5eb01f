"""facelab.privacy MASQUE: landmark masks, prompt alignment and attention control, null-text inversion, masked
latent blending, pairwise dodging guidance, PGD baselines, dodging/locality metrics and bad input.

Everything runs on tiny randomly initialised UNets (no checkpoint, no download) and a stub face embedder."""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab.diffusion import DiffusionModel, PatchAutoencoder, make_scheduler, tiny_stable_diffusion
from facelab.privacy.attention import AttentionEditor, PromptError, SourceAttention, align_prompts
from facelab.models import FaceModel
from facelab.core.regions import EmptyMaskError, face_region_masks, latent_mask, region_for_word
from facelab.privacy.masks import LandmarksOutsideError, makeup_word
from facelab.privacy.masque import (MasqueConfig, NoReferencesError, build_references, guided_reconstruction,
                                    masque_protect, null_text_inversion, pairwise_similarity, pgd_dodge)
from facelab.studies.privacy_masque import dodging_rates, locality

SRC = "a face of a person"
EDIT = "a face of a person with red lipstick"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models are far faster on one thread than with several on a busy machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Text:
    """Prompt encoder stand-in: a fixed (L, 32) random matrix per prompt."""

    def __init__(self, tokens=8):
        self.tokens = tokens

    def __call__(self, prompts):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return torch.stack([torch.randn(self.tokens, 32, generator=torch.Generator().manual_seed(sum(map(ord, p)) + 1))
                            for p in prompts])


def _quick(tokens=8, size=32, patch=4):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=size // patch, in_channels=3 * patch ** 2, out_channels=3 * patch ** 2,
                                layers_per_block=1, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=8).eval().requires_grad_(False)
    with torch.no_grad():   # a calmer random UNet: small noise predictions, as a trained one makes
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
    return DiffusionModel(unet=unet, scheduler=make_scheduler("ddim"), text_encoder=_Text(tokens),
                          vae=PatchAutoencoder(patch), image_size=size, name="test-quick")


class _StubEmbedder(torch.nn.Module):
    input_size = 32
    distance = "cosine"
    differentiable = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, 2, 1),
                                       torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 64, 16))

    def forward(self, x):
        return self.net(x - 0.5)


@pytest.fixture(scope="module")
def faces():
    from facelab.synth import FaceWorld

    b = FaceWorld(seed=0, size=32).sample(n_identities=2, per_identity=2, identity_offset=100000)
    return b.images, b.landmarks, b.labels["identity"].tolist()


@pytest.fixture(scope="module")
def stub():
    return FaceModel("stub", _StubEmbedder().requires_grad_(False), "synth-64")


# ----------------------------------------------------------------------------------------------- masks
def test_region_masks_sit_on_their_landmarks(faces):
    _, lm, _ = faces
    big = lm * 4  # draw at 128 px for a sharper check
    for region, idx in (("lips", range(48, 60)), ("eyeliner", range(36, 48))):
        m = face_region_masks(big, 128, region, soften=0)
        assert m.shape == (4, 1, 128, 128) and float(m.min()) >= 0 and float(m.max()) <= 1
        for i in range(4):
            pts = big[i, list(idx)].round().long()
            assert float(m[i, 0, pts[:, 1], pts[:, 0]].mean()) > 0.5
    eyes_y = big[:, 36:48, 1].mean(1)
    shadow = face_region_masks(big, 128, "eyeshadow", soften=0)
    cheeks = face_region_masks(big, 128, "cheeks", soften=0)
    ys = torch.arange(128.0).view(1, 128, 1)
    centroid = lambda m: (m[:, 0] * ys).flatten(1).sum(1) / m[:, 0].flatten(1).sum(1)
    assert (centroid(shadow) < eyes_y).all() and (centroid(cheeks) > eyes_y).all()
    both = face_region_masks(big, 128, ["lips", "cheeks"], soften=0)
    assert torch.allclose(both, torch.maximum(face_region_masks(big, 128, "lips", soften=0), cheeks), atol=0.02)
    assert region_for_word("red lipstick") == "lips" and region_for_word("blush") == "cheeks"
    with pytest.raises(ValueError, match="no face region"):
        region_for_word("hat")


def test_empty_masks_raise(faces):
    _, lm, _ = faces
    with pytest.raises(EmptyMaskError, match="no landmarks"):
        face_region_masks(None, 32)
    bad = lm.clone()
    bad[1] = float("nan")
    with pytest.raises(EmptyMaskError, match=r"faces \[1\]"):
        face_region_masks(bad, 32)
    with pytest.raises(EmptyMaskError, match="outside"):
        face_region_masks(lm + 500, 32)
    with pytest.raises(EmptyMaskError, match="68 landmarks"):
        face_region_masks(torch.zeros(2, 5, 2), 32)


def test_latent_mask_covers_pixel_mask(faces):
    _, lm, _ = faces
    m = face_region_masks(lm, 32, "lips")
    lat = latent_mask(m, 8)
    assert lat.shape == (4, 1, 8, 8) and set(lat.unique().tolist()) <= {0.0, 1.0}
    up = torch.nn.functional.interpolate(lat, size=32, mode="nearest")
    assert float((m * (1 - up)).max()) <= 0.05


# ----------------------------------------------------------------------------------------------- prompts
def _record_then_edit(model, al, x_src, c_src, x_edit, c_edit, hw, **kw):
    """Record the source pass's maps, then run an edit batch [uncond; cond] with them; returns (editor, output)."""
    src = SourceAttention()
    n = x_src.shape[0]
    with AttentionEditor(model.unet, None, n, hw, 10, source=src, mode="record", self_replace=0.5) as rec:
        rec.begin_step(0)
        model.unet(x_src, 500, encoder_hidden_states=c_src)
    with AttentionEditor(model.unet, al, n, hw, 10, source=src, mode="edit", self_replace=0.5, **kw) as ed:
        ed.begin_step(0)
        out = model.unet(x_edit, 500, encoder_hidden_states=c_edit).sample
    return ed, out, src


def test_prompt_alignment_names_the_word():
    model = tiny_stable_diffusion(32)
    al = align_prompts(model, SRC, EDIT, "lipstick")
    assert al.n_tokens == 77 and al.word_indices == [8]           # <start> a face of a person with red lipstick
    assert al.mapper[:6].tolist() == list(range(6)) and al.alpha[:6].tolist() == [1.0] * 6
    assert al.alpha[6:9].tolist() == [0.0, 0.0, 0.0]               # "with red lipstick" are new
    assert al.mapper[9].item() == 6 and al.alpha[9] == 1           # end token aligned to the source's end token
    with pytest.raises(PromptError, match="does not contain the edited word"):
        align_prompts(model, SRC, "a face of a person with blue eyeshadow", "lipstick")
    with pytest.raises(PromptError, match="already contains"):
        align_prompts(model, "a face with lipstick", "a face with red lipstick", "lipstick")
    # the word's cross-attention is recorded on the latent grid (edit, conditional group)
    x = torch.randn(1, 4, 16, 16)
    ed, _, src = _record_then_edit(model, al, x, model.encode_prompt([SRC]), torch.cat([x, x]),
                                   model.encode_prompt(["", EDIT]), (16, 16))
    m = ed.word_map()
    assert m.shape == (1, 16, 16) and float(m.std()) > 0 and float(m.min()) >= 0
    assert src.n_tokens == 77 and len(src.probs) > 0 and src.nbytes() > 0
    single = align_prompts(_quick(tokens=1), SRC, EDIT, "lipstick")
    assert single.n_tokens == 1 and not single.informative


def test_edit_processor_matches_default_attention_when_inactive():
    model = _quick()
    x = torch.randn(4, 48, 8, 8)
    c = model.encode_prompt(["", "", EDIT, EDIT])                  # [uncond (2 faces); cond edit (2 faces)]
    ref = model.unet(x, 500, encoder_hidden_states=c).sample
    al = align_prompts(model, SRC, EDIT, "lipstick")
    src = SourceAttention()
    with AttentionEditor(model.unet, None, 2, (8, 8), 10, source=src, mode="record") as rec:
        rec.begin_step(0)
        model.unet(torch.randn(2, 48, 8, 8), 500, encoder_hidden_states=model.encode_prompt([SRC, SRC]))
    with AttentionEditor(model.unet, al, 2, (8, 8), 10, source=src, mode="edit") as ed:
        ed.active = False
        ed.begin_step(0)
        out = model.unet(x, 500, encoder_hidden_states=c).sample
        ed.active = True
        ed.begin_step(0)
        edited = model.unet(x, 500, encoder_hidden_states=c).sample
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(edited[:2], ref[:2], atol=1e-5)            # the unconditional group is never changed
    assert not torch.allclose(edited[2:], ref[2:], atol=1e-4)        # the conditional edit is
    assert model.unet.attn_processors != {} and all(type(p).__name__ != "EditAttnProcessor"
                                                    for p in model.unet.attn_processors.values())
    with pytest.raises(ValueError, match="TokenAlignment"):
        AttentionEditor(model.unet, None, 2, (8, 8), 10, source=src, mode="edit")


def _padded_model():
    """A tiny UNet with the quick model's padding mask and a prompt encoder that writes zero rows at padding."""
    from facelab.diffusion.model import install_padding_mask

    model = _quick()
    install_padding_mask(model.unet)

    class _Padded(_Text):
        def __call__(self, prompts):
            out = super().__call__(prompts)
            out[:, 5:] = 0                                         # 5 tokens, then padding
            return out

    model.text_encoder = _Padded(8)
    return model


def test_edit_processor_masks_the_padding():
    from diffusers.models.attention_processor import AttnProcessor

    model = _padded_model()
    x = torch.randn(2, 48, 8, 8)
    c = model.encode_prompt([SRC, EDIT])
    masked = model.unet(x, 500, encoder_hidden_states=c).sample          # the quick UNet's own processor
    saved = model.unet.attn_processors
    model.unet.set_attn_processor(AttnProcessor())
    unmasked = model.unet(x, 500, encoder_hidden_states=c).sample
    model.unet.set_attn_processor(saved)
    assert not torch.allclose(masked, unmasked, atol=1e-4)               # padding would take attention
    al = align_prompts(model, SRC, EDIT, "lipstick")
    with AttentionEditor(model.unet, al, 2, (8, 8), 10, source=SourceAttention(), mode="edit") as ed:
        ed.active = False
        ed.begin_step(0)
        same = model.unet(x, 500, encoder_hidden_states=c).sample
    assert torch.allclose(same, masked, atol=1e-5)
    # recorded source maps put (almost) no mass on padded keys
    src = SourceAttention()
    with AttentionEditor(model.unet, None, 2, (8, 8), 10, source=src, mode="record") as rec:
        rec.begin_step(0)
        model.unet(x, 500, encoder_hidden_states=c)
    cross = [p for p in src.probs.values() if p.shape[-1] == 8]
    assert cross and all(float(p[..., 5:].sum(-1).max()) < 1e-3 for p in cross)


def test_minilm_word_pieces_align():
    """The quick model's tokenizer splits 'eyeshadow' into three pieces; the alignment names all of them."""
    from transformers import AutoTokenizer

    from facelab.diffusion.model import TOKEN_LENGTH, _PaddedTokenizer, minilm_path

    try:
        tok = _PaddedTokenizer(AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True), TOKEN_LENGTH)
    except (OSError, ModuleNotFoundError) as exc:   # pragma: no cover - the package is a dependency
        pytest.skip(f"MiniLM tokenizer not available: {exc}")

    class _Enc:
        tokenizer = tok

        def __call__(self, prompts):
            return torch.zeros(len(prompts), TOKEN_LENGTH, 4)

    model = DiffusionModel(unet=None, scheduler=None, text_encoder=_Enc())
    al = align_prompts(model, SRC, "a face of a person with blue eyeshadow", "eyeshadow")
    assert al.pieces == ["eyes", "##had", "##ow"] and al.word_indices == [8, 9, 10]
    assert al.alpha[al.word_indices].tolist() == [0.0] * 3 and al.n_tokens == TOKEN_LENGTH
    assert al.mapper[11].item() == 6                                      # [SEP] -> the source's [SEP]
    al2 = align_prompts(model, SRC, EDIT, "lipstick")
    assert al2.pieces == ["lipstick"] and al2.word_indices == [8]


# ----------------------------------------------------------------------------------------------- inversion
def test_null_text_inversion_beats_ddim_inversion_under_guidance(faces):
    images = faces[0][:2]
    model = _quick()
    plain = null_text_inversion(model, images, SRC, num_steps=8, guidance_scale=3.0, inner_steps=0)
    nti = null_text_inversion(model, images, SRC, num_steps=8, guidance_scale=3.0, inner_steps=10, lr=0.5)
    mse_plain = float((guided_reconstruction(model, plain) - images).pow(2).mean())
    mse_nti = float((guided_reconstruction(model, nti) - images).pow(2).mean())
    assert nti.uncond.shape == (8, 2, 8, 32)
    assert mse_nti < 0.7 * mse_plain, (mse_nti, mse_plain)
    with pytest.raises(ValueError, match="guidance_scale must be > 1"):
        null_text_inversion(model, images, SRC, guidance_scale=1.0)


# ----------------------------------------------------------------------------------------------- the edit
def test_masque_edits_stay_inside_the_mask_and_guidance_dodges(faces, stub):
    images, lm, ids = faces
    model = _quick()
    cfg = dict(num_steps=6, guidance_scale=3.0, null_inner_steps=2)
    inv = null_text_inversion(model, images, SRC, num_steps=6, guidance_scale=3.0, inner_steps=2)
    plain = masque_protect(model, images, lm, ids, edit_prompt=EDIT, word="lipstick", models=[stub],
                           config=MasqueConfig(adversarial=False, **cfg), inversion=inv)
    adv = masque_protect(model, images, lm, ids, edit_prompt=EDIT, word="lipstick", models=[stub],
                         config=MasqueConfig(adv_step=0.5, adv_start=0.0, **cfg), inversion=inv)
    outside = plain.mask == 0
    for r in (plain, adv):
        assert r.images.shape == images.shape and r.map_kind == "noise-difference"   # no tokenizer: no word tokens
        assert float((r.images - images).abs().masked_select(outside).max()) == 0.0
        assert float((r.images - images).abs().amax()) > 0.05
    loc = locality(adv.images, images, adv.mask)
    assert loc["change outside (/255)"] == 0 and loc["change inside (/255)"] > 1
    refs = build_references([stub], images, lm, ids)
    sim = lambda x: float(pairwise_similarity([stub], x, lm, refs).mean())
    assert sim(adv.images) < sim(plain.images) - 0.01
    assert adv.history[-1]["pairwise similarity"] < adv.history[0]["pairwise similarity"]
    # without the pixel composite, latent blending alone keeps the latent cells outside the blend mask = source
    nopaste = masque_protect(model, images, lm, ids, edit_prompt=EDIT, word="lipstick", config=MasqueConfig(
        adversarial=False, paste=False, **cfg), inversion=inv)
    keep = torch.nn.functional.interpolate(nopaste.blend_mask, size=32, mode="nearest") == 0
    assert torch.allclose(nopaste.images.masked_select(keep.expand_as(images)),
                          nopaste.reconstruction.masked_select(keep.expand_as(images)), atol=1e-6)


def test_single_token_model_uses_noise_difference_map(faces):
    images, lm, ids = faces
    model = _quick(tokens=1)
    r = masque_protect(model, images[:2], lm[:2], ids[:2], edit_prompt=EDIT, word="lipstick",
                       config=MasqueConfig(num_steps=4, null_inner_steps=0, adversarial=False))
    assert r.map_kind == "noise-difference" and r.word_map.shape == (2, 8, 8)
    assert float(r.word_map.max()) == pytest.approx(1.0)


def test_masque_bad_input(faces, stub):
    images, lm, ids = faces
    model = _quick()
    kw = dict(models=[stub], config=MasqueConfig(num_steps=2, null_inner_steps=0))
    with pytest.raises(PromptError, match="does not contain"):
        masque_protect(model, images, lm, ids, edit_prompt="a face of a person with blue eyeshadow",
                       word="lipstick", **kw)
    nan = lm.clone()
    nan[0] = float("nan")
    with pytest.raises(EmptyMaskError):
        masque_protect(model, images, nan, ids, edit_prompt=EDIT, word="lipstick", **kw)
    with pytest.raises(NoReferencesError, match="no other image"):
        masque_protect(model, images[[0, 2]], lm[[0, 2]], [ids[0], ids[2]], edit_prompt=EDIT, word="lipstick",
                       on_missing_references="error", **kw)
    with pytest.raises(ValueError, match="surrogate"):
        masque_protect(model, images, lm, ids, edit_prompt=EDIT, word="lipstick",
                       config=MasqueConfig(num_steps=2, null_inner_steps=0))
    # a prompt with no word of the vocabulary of regions: says which words there are
    with pytest.raises(PromptError, match="names no makeup.*lipstick -> lips"):
        masque_protect(model, images, lm, ids, edit_prompt="a face of a person with a green hat", **kw)
    # landmarks outside the image: says which faces and where
    out = lm.clone()
    out[1, 48:68, 0] += 40
    with pytest.raises(LandmarksOutsideError, match=r"face\(s\) \[1\].*outside the 32x32 image"):
        masque_protect(model, images, out, ids, edit_prompt=EDIT, **kw)
    assert issubclass(LandmarksOutsideError, EmptyMaskError)


def test_masque_word_comes_from_the_prompt(faces):
    images, lm, ids = faces
    r = masque_protect(_quick(), images[:2], lm[:2], ids[:2], edit_prompt="a face of a person with blue eyeshadow",
                       config=MasqueConfig(num_steps=2, null_inner_steps=0, adversarial=False))
    assert r.word == "eyeshadow" and r.region == "eyeshadow"
    assert makeup_word("a face of a person with red lipstick and pink blush") == ("blush", "cheeks")


@pytest.mark.parametrize("bad", [dict(adv_step=-0.1), dict(adv_step=float("nan")), dict(guidance_scale=float("nan")),
                                 dict(guidance_scale=0.5), dict(word_weight=0), dict(adv_step="x"),
                                 dict(cross_replace=1.5), dict(num_steps=0), dict(blend_dilation=-1),
                                 dict(blend_dilation=1.5), dict(blend_dilation=True)])
def test_masque_config_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="must be|fraction|integer"):
        MasqueConfig(**bad)


def test_blend_dilation_widens_the_local_blend_inside_the_region(faces):
    """prompt-to-prompt's LocalBlend dilates the word map before thresholding: the blend keeps every cell it kept
    undilated, gains neighbours, and never leaves the region; dilation 0 is the undilated blend."""
    images, lm, ids = faces
    model = _quick()
    inv = null_text_inversion(model, images[:2], SRC, num_steps=3, inner_steps=0)
    cfg = dict(num_steps=3, null_inner_steps=0, adversarial=False, blend_threshold=0.99)
    kw = dict(edit_prompt=EDIT, word="lipstick", inversion=inv)
    plain = masque_protect(model, images[:2], lm[:2], ids[:2], config=MasqueConfig(**cfg), **kw)
    wide = masque_protect(model, images[:2], lm[:2], ids[:2], config=MasqueConfig(blend_dilation=1, **cfg), **kw)
    assert MasqueConfig().blend_dilation == 0
    assert bool((wide.blend_mask >= plain.blend_mask).all())                   # a superset
    assert float(wide.blend_mask.sum()) > float(plain.blend_mask.sum())       # that gained cells
    assert bool((wide.blend_mask <= plain.latent_mask).all())                 # inside the region
    assert float(plain.blend_mask.sum()) < float(plain.latent_mask.sum())     # the threshold cut some


def test_references_exclude_self_and_fall_back_to_source(faces, stub):
    images, lm, ids = faces                       # identities a, a, b, b
    refs = build_references([stub], images, lm, ids)
    assert refs.owner.tolist() == [0, 1, 2, 3] and refs.fallback == []
    e = torch.nn.functional.normalize(stub.embed(images, lm), dim=1)
    assert torch.allclose(refs.embeddings["stub"], e[[1, 0, 3, 2]], atol=1e-5)
    lone = build_references([stub], images[[0, 2]], lm[[0, 2]], ["x", "y"])
    assert lone.fallback == [0, 1] and torch.allclose(lone.embeddings["stub"], e[[0, 2]], atol=1e-5)
    sim = pairwise_similarity([stub], images[[0, 2]], lm[[0, 2]], lone)
    assert torch.allclose(sim, torch.ones(2), atol=1e-5)   # the clean face is identical to itself


# ----------------------------------------------------------------------------------------------- baselines, metrics
def test_pgd_dodge_global_and_masked(faces, stub):
    images, lm, ids = faces
    refs = build_references([stub], images, lm, ids)
    before = pairwise_similarity([stub], images, lm, refs)
    eps = 8 / 255
    glob = pgd_dodge(images, lm, ids, [stub], epsilon=eps, steps=5)
    mask = face_region_masks(lm, 32, "lips", soften=0)
    masked = pgd_dodge(images, lm, ids, [stub], epsilon=eps, steps=5, mask=mask)
    assert float((glob - images).abs().max()) <= eps + 1e-6
    assert float((masked - images).abs().masked_select((mask == 0).expand_as(images)).max()) == 0.0
    assert (pairwise_similarity([stub], glob, lm, refs) < before).all()
    assert float(pairwise_similarity([stub], masked, lm, refs).mean()) < float(before.mean())
    # the two images of each person here are identical (no nuisance), so every face starts at similarity 1, where
    # the gradient vanishes: only the random start moves it; the start is seeded
    assert torch.allclose(before, torch.ones(4), atol=1e-5)
    assert torch.equal(glob, pgd_dodge(images, lm, ids, [stub], epsilon=eps, steps=5))
    assert not torch.equal(glob, pgd_dodge(images, lm, ids, [stub], epsilon=eps, steps=5, seed=1))


def test_dodging_rates_count_pairs_below_threshold(faces, stub):
    images, lm, _ = faces
    owner = [0, 0, 1]
    gallery = images[[1, 2, 3]]
    e = stub.embed(images[:2], lm[:2])
    g = stub.embed(gallery, lm[[1, 2, 3]])
    s = torch.nn.functional.cosine_similarity(e[owner], g).numpy()
    thr = {"FAR=0.1": float(np.sort(s)[1]) + 1e-6, "FAR=0.01": 2.0, "FAR=0.001": -2.0}
    r = dodging_rates(stub, images[:2], lm[:2], gallery, lm[[1, 2, 3]], owner, thr)
    assert r["FAR=0.1"] == pytest.approx(2 / 3) and r["FAR=0.01"] == 1.0 and r["FAR=0.001"] == 0.0
    assert r["n"] == 3 and r["FAR=0.1 lo"] < 2 / 3 < r["FAR=0.1 hi"]          # Wilson interval of 2 of 3 pairs
    assert r["mean score"] == pytest.approx(float(s.mean()), abs=1e-5)


def test_makeup_classifier_heads_and_phrases():
    from facelab.privacy.makeup import MakeupClassifier, parse_makeup, prompt_adherence

    assert parse_makeup("a face of a person with dark red lipstick") == ("lipstick", "dark red")
    assert parse_makeup("pink blush") == ("blush", "pink")
    with pytest.raises(ValueError, match="none of its colours"):
        parse_makeup("dark eyeliner")
    with pytest.raises(ValueError, match="no makeup kind"):
        parse_makeup("a hat")
    torch.manual_seed(0)
    net = MakeupClassifier().eval()
    out = net(torch.rand(3, 3, 32, 32))
    assert {k: v.shape for k, v in out.items()} == {k: (3, len(c)) for k, c in net.classes.items()}
    x = torch.rand(3, 3, 64, 64)
    pred = net.predict(x)
    assert all(p in net.classes["lipstick"] for p in pred["lipstick"])
    assert prompt_adherence(net, x, "red lipstick") == sum(p == "red" for p in pred["lipstick"]) / 3


def test_decode_region_matches_a_full_decode_inside_its_window(faces):
    from facelab.privacy.masque import decode_region, region_boxes

    images, lm, _ = faces
    model = _quick()                                     # space-to-depth: decoding is local, so a window is exact
    z = model.encode(images) + 0.1 * torch.randn(4, 48, 8, 8, generator=torch.Generator().manual_seed(0))
    pm = face_region_masks(lm, 32, "lips")
    lmask = latent_mask(pm, 8)
    boxes, (hc, wc) = region_boxes(lmask, 1)
    assert boxes.shape == (4, 2) and hc <= 8 and wc <= 8
    for i, (y, x) in enumerate(boxes.tolist()):          # the window holds the whole region
        on = lmask[i, 0].nonzero()
        assert on[:, 0].min() >= y and on[:, 0].max() < y + hc and on[:, 1].min() >= x and on[:, 1].max() < x + wc
    zz = z.clone().requires_grad_(True)
    part = decode_region(model, zz, images, boxes, (hc, wc))
    full = model.decode(z)
    inside = (pm > 0).expand_as(images)
    assert torch.allclose(part.masked_select(inside), full.masked_select(inside), atol=1e-6)
    part.sum().backward()
    assert float(zz.grad.abs().sum()) > 0


def test_negative_prompt_inversion_replays_ddim_without_optimisation(faces):
    images = faces[0][:2]
    model = _quick()
    neg = null_text_inversion(model, images, SRC, num_steps=6, guidance_scale=3.0, inner_steps=0, null_init="source")
    plain = null_text_inversion(model, images, SRC, num_steps=6, guidance_scale=3.0, inner_steps=0)
    assert torch.allclose(neg.uncond[0], neg.cond)
    err = lambda inv: float((guided_reconstruction(model, inv) - images).pow(2).mean())
    assert err(neg) < err(plain)
    assert torch.allclose(model.decode(neg.trajectory[-1]), guided_reconstruction(model, neg), atol=1e-5)
    with pytest.raises(ValueError, match="null_init"):
        null_text_inversion(model, images, SRC, num_steps=2, guidance_scale=3.0, null_init="zeros")


def test_masque_resumes_from_the_unguided_edit(faces, stub):
    images, lm, ids = faces
    model = _quick()
    cfg = dict(num_steps=6, guidance_scale=3.0, null_inner_steps=0, adv_start=0.5)
    inv = null_text_inversion(model, images, SRC, num_steps=6, guidance_scale=3.0, inner_steps=0,
                              record_attention=True)
    kw = dict(edit_prompt=EDIT, models=[stub], inversion=inv)
    plain = masque_protect(model, images, lm, ids, config=MasqueConfig(adversarial=False, **cfg), **kw)
    full = masque_protect(model, images, lm, ids, config=MasqueConfig(adv_step=0.5, **cfg), **kw)
    resumed = masque_protect(model, images, lm, ids, config=MasqueConfig(adv_step=0.5, **cfg), resume=plain, **kw)
    assert torch.allclose(full.images, resumed.images, atol=1e-5)
    sims = lambda r: [h["pairwise similarity"] for h in r.history if "pairwise similarity" in h]
    assert len(sims(resumed)) == len(sims(full)) == 3 and sims(resumed) == pytest.approx(sims(full), abs=1e-5)
    with pytest.raises(ValueError, match="resume"):
        masque_protect(model, images, lm, ids, config=MasqueConfig(adv_step=0.5, **{**cfg, "adv_start": 0.0}),
                       resume=plain, **kw)


def test_inversion_reconstruction_is_decoded_once_and_equals_a_fresh_decode():
    import facelab.privacy.masque as M

    class Model:
        calls = 0

        def decode(self, z):
            Model.calls += 1
            return z.mean(1, keepdim=True).repeat(1, 3, 1, 1)

    traj = torch.randn(3, 2, 4, 5, 5)
    inv = M.NullTextInversion(timesteps=torch.arange(2), xts=traj, cond=torch.zeros(2, 1, 1),
                              uncond=torch.zeros(2, 2, 1, 1), guidance_scale=3.0, trajectory=traj)
    m = Model()
    a, b = inv.reconstruction(m), inv.reconstruction(m)
    assert Model.calls == 1 and a is b and torch.equal(a, m.decode(traj[-1]))
    inv.trajectory = traj + 1                      # a new trajectory is decoded again
    assert torch.allclose(inv.reconstruction(m), (traj[-1] + 1).mean(1, keepdim=True).repeat(1, 3, 1, 1))


# ------------------------------------------------------------------------------------ colour-preserving guidance
def test_region_parts_split_the_mask_into_vertical_strips(faces):
    from facelab.privacy.masque import region_parts

    _, lm, _ = faces
    mask = face_region_masks(lm, 32, "eyeshadow", soften=0.05)
    parts = region_parts(mask, 2)
    assert parts.shape == (lm.shape[0], 2, 32, 32)
    assert torch.allclose(parts.sum(1, keepdim=True), mask)
    cols = torch.arange(32.0)
    centre = lambda m: float((m.sum(0) * cols).sum() / m.sum())
    for i in range(lm.shape[0]):      # the left strip holds one eye, the right strip the other
        assert centre(parts[i, 0]) < centre(mask[i, 0]) < centre(parts[i, 1])
        assert float(parts[i, 0].sum()) > 0.2 * float(mask[i].sum()) and float(parts[i, 1].sum()) > 0.2 * float(mask[i].sum())
    assert torch.equal(region_parts(mask, 1)[:, :1], mask)


def test_anchor_colour_moves_each_part_to_its_target_and_nothing_else(faces):
    from facelab.privacy.masque import anchor_colour, region_parts

    images, lm, _ = faces
    mask = face_region_masks(lm, 32, "eyeshadow", soften=0.05)
    parts = region_parts(mask, 2)
    same, colours = anchor_colour(images, parts)
    assert same is images and colours.shape == (images.shape[0], 2, 3)
    w = parts[0, 1] / parts[0, 1].sum()
    assert torch.allclose(colours[0, 1], (images[0] * w).sum((1, 2)), atol=1e-6)
    target = colours + torch.tensor([-0.05, -0.03, -0.04])                        # no pixel is clipped
    moved, _ = anchor_colour(images, parts, target)
    assert torch.allclose(anchor_colour(moved, parts)[1], target, atol=1e-5)
    assert float((moved - images).abs().masked_select(mask.expand_as(images) == 0).max()) == 0.0
    # a gradient through the anchored image carries no change of the parts' mean colours
    x = images.clone().requires_grad_(True)
    g, = torch.autograd.grad((anchor_colour(x, parts, target)[0] * torch.randn_like(images)).sum(), x)
    assert float(anchor_colour(g, parts)[1].abs().max()) < 1e-5


def test_masque_with_kept_colour_or_chroma_logs_colours_and_stays_in_its_region(faces, stub):
    images, lm, ids = faces
    model = _quick()
    cfg = dict(num_steps=6, guidance_scale=3.0, null_inner_steps=0, adv_start=0.5, adv_step=0.5)
    inv = null_text_inversion(model, images, SRC, num_steps=6, guidance_scale=3.0, inner_steps=0,
                              record_attention=True)
    kw = dict(edit_prompt=EDIT, models=[stub], inversion=inv)
    free = masque_protect(model, images, lm, ids, config=MasqueConfig(**cfg), **kw)
    kept = masque_protect(model, images, lm, ids, config=MasqueConfig(keep_colour=True, **cfg), **kw)
    logged = [h["colour"] for h in kept.history if "colour" in h]
    assert len(logged) == 3 and np.asarray(logged).shape == (3, 1, 3)                # lips: one part
    from facelab.privacy.masque import anchor_colour
    first = torch.tensor(logged[0][0])
    miss = lambda r: float((anchor_colour(r.images, r.mask)[1][:, 0].mean(0) - first).abs().max())
    assert miss(kept) < 0.5 * miss(free)     # the output keeps the first colour (up to clipping of the random model)
    assert not any("colour" in h for h in free.history)
    assert float((kept.images - images).abs().masked_select(kept.mask == 0).max()) == 0.0
    assert float((kept.images - free.images).abs().max()) > 1e-4
    # each pixel's chroma held as well: the same mean colour, a different edit, nothing outside the region moves
    chroma = masque_protect(model, images, lm, ids, config=MasqueConfig(keep_colour="chroma", **cfg), **kw)
    assert chroma.config["keep_colour"] == "chroma"
    assert miss(chroma) < 0.5 * miss(free)
    assert float((chroma.images - images).abs().masked_select(chroma.mask == 0).max()) == 0.0
    assert float((chroma.images - kept.images).abs().max()) > 1e-4


def test_hold_chroma_keeps_the_references_colour_and_the_images_luminance(faces):
    from facelab.core.images import luminance as Y
    from facelab.privacy.masque import hold_chroma, region_parts

    images, lm, _ = faces
    mask = face_region_masks(lm, 32, "lips", soften=0.05)
    parts = region_parts(mask, 1)
    reference = images.flip(0)                                    # another face's colours
    out = hold_chroma(images, parts, reference)
    full = (mask >= 1).expand_as(images)
    assert full.any()
    # inside: the image's luminance, and a grey difference to the reference (the same in R, G and B)
    assert torch.allclose(Y(out)[mask >= 1], Y(images)[mask >= 1], atol=1e-5)
    diff = out - reference
    assert float((diff - diff.mean(1, keepdim=True)).abs().masked_select(full).max()) < 1e-5
    # outside: untouched; the reference itself comes back unchanged
    assert float((out - images).abs().masked_select(mask.expand_as(images) == 0).max()) == 0.0
    assert torch.allclose(hold_chroma(reference, parts, reference), reference, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 1.5, "two", 2, "mean"])
def test_masque_config_rejects_bad_colour_parts(bad):
    with pytest.raises(ValueError, match="keep_colour"):
        MasqueConfig(keep_colour=bad)


def test_self_attention_the_editor_leaves_alone_runs_the_models_own_processor(faces, stub, monkeypatch):
    """After the injection steps (and above max_self_tokens) self-attention is neither recorded nor injected: it runs
    the module's own fused processor, and the inversion's records and the edit equal the explicit path's."""
    from facelab.privacy import attention as att

    images, lm, ids = faces
    model = _quick()
    cfg = MasqueConfig(num_steps=6, guidance_scale=3.0, null_inner_steps=0, adv_start=0.5, adv_step=0.5)

    def run():
        inv = null_text_inversion(model, images, SRC, num_steps=6, guidance_scale=3.0, inner_steps=0,
                                  record_attention=True, self_replace=cfg.self_replace)
        r = masque_protect(model, images, lm, ids, edit_prompt=EDIT, models=[stub], config=cfg, inversion=inv)
        return inv, r

    calls = []
    fused = att.EditAttnProcessor.__call__

    def counting(self, attn, hidden_states, encoder_hidden_states=None, *a, **k):
        if encoder_hidden_states is None and self.fallback is not None:
            q = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[-2] * hidden_states.shape[-1]
            calls.append(self.editor.leaves_self_attention(hidden_states.shape[0], q))
        return fused(self, attn, hidden_states, encoder_hidden_states, *a, **k)

    monkeypatch.setattr(att.EditAttnProcessor, "__call__", counting)
    inv, r = run()
    assert any(calls) and not all(calls)                 # some layers fused, the injection steps' layers explicit
    monkeypatch.setattr(att.AttentionEditor, "leaves_self_attention", lambda self, b, q: False)
    inv_x, r_x = run()                                   # every layer explicit, as before the fused path
    assert inv.attention.probs.keys() == inv_x.attention.probs.keys()
    assert all(torch.allclose(inv.attention.probs[k], inv_x.attention.probs[k], atol=1e-5) for k in inv.attention.probs)
    assert torch.allclose(r.images, r_x.images, atol=1e-4)
    assert r.history[-1]["pairwise similarity"] == pytest.approx(r_x.history[-1]["pairwise similarity"], abs=1e-5)
