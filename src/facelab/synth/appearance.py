"""A photofit appearance model of real face photos for the world's ``style="photo"``.

What makes a real recogniser tell people apart is the texture and fine shape of real faces, which the world's
cartoon primitives (``style="cartoon"``, the default) do not have. This module builds, once, the skin *detail* maps
of the real faces the book ships, aligned to the world's frontal landmark frame, and the statistics of their
landmark shapes; a synthetic person's appearance is then a *photofit*: its skin, brows, eyes, nose and mouth come
from at least :data:`MIN_SOURCES` different real people (each mirrored or not), with soft seams and a second face
blended in, so that nobody is a copy of one real person. The skin and the mouth come only from faces that face-api
does not read as happy (most demo photos smile, and a smiling cheek would make a neutral face look happy). The
landmark shape gets offsets from a PCA of the real faces' shapes (:func:`shape_offsets`). The photofit's
low-frequency luminance (eye sockets, cheek and nose shading, the layout of dark and light) is replaced by that of
one more real person, a face of Labeled Faces in the Wild (:func:`extract_lfw`, :data:`LFW_RELIEF`): 71 such people
behind the 22, so that two identities rarely share a source for it. (A PCA of the detail maps,
sampled as Gaussian coefficient vectors, was tried first; on the tuning seed it gave dlib a FAR of 0.28 against
0.32 for the first photofits, before the shape offsets and the other changes, which were tried on photofits only.)

The photos (all offline assets, :mod:`facelab.assets`; licences from ``data/assets.toml``):

* the people of face-api's six demo group photos (npm ``@vladmandic/face-api`` 1.7.15, MIT, people unnamed);
* one portrait each of Barack Obama and Joe Biden (``face_recognition`` 1.3.0 test images, MIT);
* Eileen Collins (scikit-image ``astronaut``, public-domain NASA photo).

Grace Hopper's portrait is left out: her glasses would become part of the skin texture.

The low-frequency relief comes from scikit-image's ``lfw_subset`` (``skimage.data``, shipped with the package; 25 x 25
grey crops of Labeled Faces in the Wild, Huang et al. 2007: news photos of public figures collected from the web for
research use, people not named here), the 71 of its 100 face crops where dlib finds a face that face-api does not
read as happy.

Each face is found with dlib's HOG detector and its 68 landmarks with dlib's shape predictor; a piecewise-affine
warp on the landmarks' triangulation carries the photo onto the world's mean shape
(:func:`facelab.synth.landmarks.mean_shape`) on an ``R x R`` grid over the frontal frame (a smiling mouth closes onto
the mean lips; the teeth left between them are in-painted); the colour is divided by the face's own median skin
colour, so that the maps hold *relative* detail (eyes, brows, lips, nostrils, skin texture, shading) and the world's
own skin-tone parameter keeps its meaning. The model is saved as the checkpoint ``synth_appearance``
(``data/models/``, about 2.7 MB) and rebuilt by ``python -m facelab.synth.appearance`` (about a minute).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from facelab.synth.landmarks import mean_shape

NAME = "synth_appearance"
RESTORE = "python -m facelab.synth.appearance"
#: texture resolution over the whole frontal frame [-1, 1]^2, and the number of principal components kept
SETTINGS = {"resolution": 128, "kernel": 0.08, "version": 7, "shape_components": 12, "lfw_resolution": 48}

#: (asset, file, keep the first face only) of the photos used
PHOTOS = [("face-recognition-test-images", "obama.jpg", True), ("face-recognition-test-images", "biden.jpg", True),
          ("astronaut", "astronaut.png", True)] + \
         [("faceapi-demo-photos", f"sample{i}.jpg", False) for i in range(1, 7)]


def _frame_to_photo(pts: np.ndarray, kernel: float | None = None) -> callable:
    """Map from world frontal-frame points (M, 2) to photo pixels, for a photo face with 68 landmarks ``pts``:
    piecewise affine on a triangulation of the 68 landmarks (each landmark lands exactly on the photo's, so an open
    smiling mouth is closed onto the mean shape's lips), the landmarks' similarity transform outside, through a ring
    of points round the face. (``kernel``, the width of the smooth warp of version 1, is no longer used.)"""
    from skimage.transform import PiecewiseAffineTransform

    from facelab.core.geometry import umeyama

    m = mean_shape().numpy().astype(np.float64)
    M = umeyama(m, pts)
    sim = lambda p: p @ M[:, :2].T + M[:, 2]  # noqa: E731
    c = m.mean(0)
    ring = [c + r * np.array([np.cos(a), np.sin(a)]) for r in (0.95, 1.6)
            for a in np.linspace(0, 2 * np.pi, 24, endpoint=False)]
    ring = np.array(ring)
    src = np.concatenate([m, ring])
    dst = np.concatenate([pts, sim(ring)])
    tf = PiecewiseAffineTransform()
    tf.estimate(src, dst)

    def f(p):
        q = tf(p)
        bad = ~np.isfinite(q).all(1) | (q == -1).all(1)
        q[bad] = sim(p[bad])
        return q
    return f, float(np.hypot(*M[:, 0]))


def face_region(R: int) -> np.ndarray:
    """(R, R) soft mask of the mean face (jaw contour and a forehead arc) in the frontal frame."""
    m = mean_shape().numpy()
    jaw = m[:17]
    brow_top = m[17:27, 1].min()
    top = brow_top - 0.3
    xs = (np.arange(R) + 0.5) * 2 / R - 1
    X, Y = np.meshgrid(xs, xs)
    cx, rx = 0.5 * (jaw[0, 0] + jaw[-1, 0]), 0.5 * (jaw[-1, 0] - jaw[0, 0])
    y0 = 0.5 * (jaw[0, 1] + jaw[-1, 1])
    phi = np.linspace(0.0, math.pi, 21)
    arc = np.stack([cx + rx * np.cos(phi), y0 - (y0 - top) * np.sin(phi)], 1)
    poly = np.concatenate([jaw, arc], 0)
    import cv2

    mask = np.zeros((R, R), np.uint8)
    c = poly.mean(0)
    poly = c + (poly - c) * 1.08                    # beyond the contour: the world's face region cuts it
    cv2.fillPoly(mask, [np.round((poly + 1) * R / 2 - 0.5).astype(np.int32)], 1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), R / 80)
    return soft


def extract_faces(resolution: int = 128, kernel: float = 0.08) -> tuple[np.ndarray, list, np.ndarray]:
    """Real faces warped to the frontal frame: ((n, 3, R, R) float32 ratios to each face's skin colour, names,
    (n, 68, 2) landmarks brought onto the mean shape by a similarity)."""
    from facelab.core.geometry import umeyama

    import cv2

    from facelab import assets
    from facelab.detect import detect_faces
    from facelab.io import load_image

    R = resolution
    xs = (np.arange(R) + 0.5) * 2 / R - 1
    X, Y = np.meshgrid(xs, xs)
    grid = np.stack([X.ravel(), Y.ravel()], 1)
    m = mean_shape().numpy()
    # skin reference: cheeks and forehead of the mean face
    ref_pts = np.array([[m[36, 0], 0.5 * (m[41, 1] + m[31, 1]) + 0.03], [m[45, 0], 0.5 * (m[46, 1] + m[35, 1]) + 0.03],
                        [0.0, m[17:27, 1].min() - 0.08]])
    out, names, shapes = [], [], []
    for asset, fname, first in PHOTOS:
        folder = assets.path(asset)
        path = folder / fname if folder.is_dir() else folder
        img = load_image(str(path))[..., :3]
        faces = detect_faces(img, "dlib-hog", min_size=40, landmarks="68")
        if first:
            faces = faces[:1]
        for k, face in enumerate(faces):
            pts = np.asarray(face.landmarks68, np.float64)
            f, scale = _frame_to_photo(pts, kernel)
            # pre-shrink the photo so that one texture pixel is about one photo pixel (area filter, no aliasing)
            shrink = max(1.0, scale * 2 / R)
            small = cv2.resize(img, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_AREA) \
                if shrink > 1.01 else img
            p = f(grid) / shrink
            mx, my = p[:, 0].reshape(R, R).astype(np.float32), p[:, 1].reshape(R, R).astype(np.float32)
            tex = cv2.remap(small.astype(np.float32) / 255, mx - 0.0, my - 0.0, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
            # the mouth's inside (teeth of a smile) is filled from the lips around it: the world draws openings
            inner = np.round((m[60:68] + 1) * R / 2 - 0.5).astype(np.int32)
            hole = np.zeros((R, R), np.uint8)
            cv2.fillPoly(hole, [inner], 1)
            hole = cv2.dilate(hole, np.ones((3, 3), np.uint8))
            tex8 = (tex.clip(0, 1) * 255).astype(np.uint8)
            tex = np.where(hole[..., None] > 0, cv2.inpaint(tex8, hole, 3, cv2.INPAINT_TELEA) / 255.0, tex)
            tex = tex.astype(np.float32)
            refs = []
            for q in ref_pts:
                j = np.round((q + 1) * R / 2 - 0.5).astype(int)
                refs.append(tex[j[1] - 3:j[1] + 4, j[0] - 3:j[0] + 4].reshape(-1, 3))
            ref = np.median(np.concatenate(refs), 0).clip(0.05, 1)
            out.append((tex / ref).transpose(2, 0, 1).astype(np.float32))
            names.append(f"{fname}#{k}")
            M = umeyama(pts, m)
            shapes.append(pts @ M[:, :2].T + M[:, 2])
    return np.stack(out), names, np.stack(shapes).astype(np.float32)


#: scikit-image's ``lfw_subset``: each 25 x 25 crop is enlarged this many times, with a border of this many pixels
LFW_UPSCALE, LFW_PAD = 8, 40


def extract_lfw(resolution: int = 48) -> tuple[np.ndarray, list]:
    """The low-frequency luminance relief of the faces of scikit-image's ``lfw_subset`` in the frontal frame:
    ((n, R, R) ratio to the face's own skin luminance, 1 outside the face region and outside the crop; indices of
    the kept crops in ``lfw_subset()``).

    ``lfw_subset`` (scikit-image 0.26, ``skimage.data``; BSD-3 package) holds 100 grey 25 x 25 face crops from Labeled
    Faces in the Wild (Huang et al. 2007: photos of public figures from news sites, collected for research) and 100
    non-face crops. Each face crop is enlarged 8 times (bicubic) with a replicated border, so that dlib's HOG
    detector and 68-point shape predictor find it (95 of 100), and carried onto the mean shape as in
    :func:`extract_faces`; crops where no face is found, or that face-api reads as happy (a smiling cheek would make
    a neutral face look happy), are left out."""
    import cv2
    from skimage.data import lfw_subset

    from facelab.detect import detect_faces
    from facelab.models import load_expression_model
    from facelab.models.expression import EXPRESSIONS, expression_crops

    R, S, P = resolution, LFW_UPSCALE, LFW_PAD
    xs = (np.arange(R) + 0.5) * 2 / R - 1
    X, Y = np.meshgrid(xs, xs)
    grid = np.stack([X.ravel(), Y.ravel()], 1)
    m = mean_shape().numpy()
    ref_pts = np.array([[m[36, 0], 0.5 * (m[41, 1] + m[31, 1]) + 0.03], [m[45, 0], 0.5 * (m[46, 1] + m[35, 1]) + 0.03],
                        [0.0, 0.5 * (m[27, 1] + m[17:27, 1].min())]])
    region = face_region(R)
    net = load_expression_model()
    relief, kept = [], []
    for i, crop in enumerate(lfw_subset()[:100]):
        g = (crop * 255).round().astype(np.uint8)
        big = cv2.resize(g, (g.shape[1] * S, g.shape[0] * S), interpolation=cv2.INTER_CUBIC)
        big = cv2.copyMakeBorder(big, P, P, P, P, cv2.BORDER_REPLICATE)
        rgb = np.repeat(big[..., None], 3, 2)
        faces = detect_faces(rgb, "dlib-hog", min_size=40, landmarks="68")[:1]
        if not faces or float(net.predict(expression_crops(rgb, faces)).numpy()[0, EXPRESSIONS.index("happy")]) >= 0.5:
            continue
        f, _ = _frame_to_photo(np.asarray(faces[0].landmarks68, np.float64))
        p = f(grid)
        smooth = cv2.GaussianBlur(big.astype(np.float32) / 255, (0, 0), S * 0.7)
        lum = cv2.remap(smooth, p[:, 0].reshape(R, R).astype(np.float32), p[:, 1].reshape(R, R).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = (p[:, 0] > P + S) & (p[:, 0] < P + (g.shape[1] - 1) * S) & (p[:, 1] > P + S) & \
            (p[:, 1] < P + (g.shape[0] - 1) * S)
        inside = cv2.GaussianBlur(inside.reshape(R, R).astype(np.float32), (0, 0), R / 32)
        refs = []
        for q in ref_pts:
            j = np.round((q + 1) * R / 2 - 0.5).astype(int)
            refs.append(lum[j[1] - 1:j[1] + 2, j[0] - 1:j[0] + 2].ravel())
        ref = max(float(np.median(np.concatenate(refs))), 0.05)
        relief.append(1 + (np.clip(lum / ref, 0.3, 1.8) - 1) * region * inside)
        kept.append(i)
    return np.stack(relief).astype(np.float32), kept


def _happiness(R: int) -> np.ndarray:
    """face-api's probability of "happy" for each real face (in :func:`extract_faces` order): smiling faces give
    eyes, brows and noses, not the skin and mouth of a neutral face."""
    from facelab import assets
    from facelab.detect import detect_faces
    from facelab.io import load_image
    from facelab.models import load_expression_model
    from facelab.models.expression import EXPRESSIONS, expression_crops

    net = load_expression_model()
    out = []
    for asset, fname, first in PHOTOS:
        folder = assets.path(asset)
        img = load_image(str(folder / fname if folder.is_dir() else folder))[..., :3]
        faces = detect_faces(img, "dlib-hog", min_size=40, landmarks="68")
        faces = faces[:1] if first else faces
        if faces:
            out.extend(net.predict(expression_crops(img, faces)).numpy()[:, EXPRESSIONS.index("happy")].tolist())
    return np.array(out, np.float32)


def region_masks(R: int) -> np.ndarray:
    """(5, R, R) soft masks in the frontal frame of the face, brows, eyes, nose and mouth of the mean shape."""
    import cv2

    m = mean_shape().numpy()
    out = [face_region(R)]
    for idx, grow in ((range(17, 27), 0.035), (range(36, 48), 0.045), (range(27, 36), 0.04), (range(48, 68), 0.045)):
        pts = m[list(idx)]
        c = pts.mean(0)
        d = pts - c
        r = np.linalg.norm(d, axis=1, keepdims=True).clip(1e-6)
        grown = pts + d / r * grow
        hulls = [grown] if idx != range(17, 27) and idx != range(36, 48) else \
            [grown[(grown[:, 0] < 0)], grown[(grown[:, 0] > 0)]]
        mask = np.zeros((R, R), np.uint8)
        for h in hulls:
            hull = cv2.convexHull(np.round((h + 1) * R / 2 - 0.5).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 1)
        out.append(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), R / 90))
    return np.stack(out)


def build(settings: dict) -> tuple[dict, dict]:
    """The real faces' detail maps in the frontal frame, inside the face region, and the region masks."""
    R = settings["resolution"]
    tex, names, shapes = extract_faces(R, settings["kernel"])
    masks = region_masks(R)
    # shape model: PCA of the landmark offsets from the mean shape (and of their mirror images); the mouth's own
    # shape (smiles in the photos) is left out: the mouth group only moves as a whole
    m = mean_shape().numpy()
    from facelab.synth.landmarks import MIRROR
    mir = shapes[:, MIRROR].copy()
    mir[..., 0] *= -1
    d = np.concatenate([shapes, mir]) - m
    d[:, 48:68] = d[:, 48:68].mean(1, keepdims=True)
    D = d.reshape(len(d), -1).astype(np.float64)
    _, S, Vt = np.linalg.svd(D - D.mean(0), full_matrices=False)
    K = settings["shape_components"]
    ratio = np.clip(tex, 0.0, 2.5)
    ratio = 1 + (ratio - 1) * masks[0][None, None]
    happy = _happiness(R)
    state = {"faces": torch.tensor(ratio, dtype=torch.float16), "masks": torch.tensor(masks, dtype=torch.float16),
             "happy": torch.tensor(happy, dtype=torch.float32),
             "shape_components": torch.tensor(Vt[:K].reshape(K, 68, 2), dtype=torch.float32),
             "shape_std": torch.tensor(S[:K] / math.sqrt(len(D) - 1), dtype=torch.float32)}
    relief, kept = extract_lfw(settings["lfw_resolution"])
    state["lfw_relief"] = torch.tensor(relief, dtype=torch.float16)
    return state, {"faces": len(tex), "names": names, "lfw_faces": len(kept), "lfw_kept": kept}


_MODEL: dict = {}


def appearance_model(device=None) -> dict:
    """The appearance model (cached): ``faces`` (F, 3, R, R) detail maps of the real faces, ``masks`` (5, R, R) face,
    brows, eyes, nose, mouth; float32 on ``device``; loaded from ``data/models/synth_appearance.safetensors``
    (built there when missing)."""
    key = str(device or "cpu")
    if key not in _MODEL:
        from facelab import checkpoints

        state, _ = checkpoints.load_or_train(NAME, build, settings=SETTINGS, restore=RESTORE)
        _MODEL[key] = {k: v.float().to(device or "cpu") for k, v in state.items()}
    return _MODEL[key]


#: uniform random numbers per identity that :func:`sample_textures` reads: :data:`N_COEF` drawn first, then
#: :data:`N_EXTRA` drawn after the head numbers (:mod:`facelab.synth.head`), so that adding them left the rest as it was
N_COEF = 12
N_EXTRA = 2
#: the upper skin (forehead, temples, round the eyes and the nose bridge: above the mean eye line + this much, with a
#: soft edge of UPPER_SOFT) comes from any real face, mirrored or not (numbers N_COEF, N_COEF + 1); the lower skin
#: (cheeks, mouth, chin) from the faces that do not smile. Identities that share a skin source were accepted by dlib
#: 2.6x as often as others; the split lowers dlib's FAR on world seeds 101, 202, 303, 404 (100 identities x 4) from
#: 0.138, 0.198, 0.194, 0.167 to 0.149, 0.175, 0.187, 0.150 (mean 0.174 -> 0.165: about the size of the noise)
UPPER_CUT, UPPER_SOFT = 0.06, 0.03
#: strength of the second face blended into every region (drawn in [0, BLEND])
BLEND = 0.3
#: share of the detail maps' chroma kept
CHROMA = 0.4
#: regions (0 skin, 4 mouth) taken from faces that do not smile, so that a neutral face does not look happy
NEUTRAL_REGIONS = (0, 4)
#: the fewest different real people an identity's regions come from
MIN_SOURCES = 3


def n_components() -> int:
    """Appearance numbers per identity (:data:`N_COEF` + :data:`N_EXTRA`)."""
    return N_COEF + N_EXTRA


def sources(coef: torch.Tensor, n_faces: int, calm=None) -> tuple:
    """Which real faces make each identity: (region sources (n, 5), mirrored (n, 5) bool, second face (n,),
    blend (n,)), from ``coef`` (n, N_COEF) uniform numbers; the regions :data:`NEUTRAL_REGIONS` come from the faces
    ``calm`` only (indices of faces that do not smile). The five regions (skin, brows, eyes, nose, mouth) come
    from at least :data:`MIN_SOURCES` different people, so no identity is one real person."""
    src = (coef[:, :5] * n_faces).long().clamp_(0, n_faces - 1)
    calm = torch.arange(n_faces) if calm is None else torch.as_tensor(calm)
    for r in NEUTRAL_REGIONS:
        src[:, r] = calm[(coef[:, r] * len(calm)).long().clamp_(0, len(calm) - 1)]
    for i in range(src.shape[0]):
        k = 1
        while len(set(src[i].tolist())) < MIN_SOURCES:
            src[i, k % 5] = (src[i, k % 5] + 7 * k) % n_faces
            k += 1
    mirrored = coef[:, 5:10] > 0.5
    second = (coef[:, 10] * n_faces).long().clamp_(0, n_faces - 1)
    return src, mirrored, second, BLEND * coef[:, 11]


#: spread of the sampled shape offsets, in units of the real faces' standard deviations
SHAPE_SCALE = 1.0
#: keep only the left-right symmetric part of the shape offsets
SYMMETRIC_SHAPE = True


def shape_offsets(z: torch.Tensor) -> torch.Tensor:
    """Landmark offsets (n, 68, 2) in the frontal frame from standard-normal numbers ``z`` (n, >= K), clipped at 2.5,
    on the real faces' shape components."""
    mdl = appearance_model()
    K = mdl["shape_std"].shape[0]
    c = z[:, :K].float().clamp(-2.5, 2.5) * mdl["shape_std"] * SHAPE_SCALE
    off = torch.einsum("nk,kpc->npc", c, mdl["shape_components"])
    if SYMMETRIC_SHAPE:
        # the photos' heads are turned a little: their asymmetric modes are mostly pose, so keep the symmetric part
        from facelab.synth.landmarks import MIRROR
        mir = off[:, torch.as_tensor(MIRROR)] * torch.tensor([-1.0, 1.0])
        off = 0.5 * (off + mir)
    return off


#: strength of the LFW relief: the photofit's luminance blurred by LFW_SIGMA texture pixels (its low frequencies, at
#: the LFW crops' resolution) is divided out at this power and the LFW face's relief multiplied in at the same power
#: (0: the photofit as it was; 1: the low frequencies of the LFW face). dlib's FAR at 0.6 (100 identities x 4, mild
#: nuisance; ``benchmarks/bench_synth_identity_pool.py``) on world seeds 101, 202: 0.150, 0.179 without the relief,
#: 0.107, 0.130 with it (SFace 0.199, 0.148 -> 0.151, 0.112); strength 1.5 gave 0.102, 0.113 (no better beyond the
#: noise, and an exaggerated real relief), keeping the photofit's own mouth 0.113, 0.139; the LFW people's landmark
#: offsets (symmetric part, as shape offsets) gave nothing (0.152, 0.186 alone). FRR stays 0
LFW_RELIEF = 1.0
LFW_SIGMA = 3.0


def pool_choice(coef: torch.Tensor, n_faces: int, n_pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(index (n,), mirrored (n,) bool) of the LFW face that gives identities with appearance numbers ``coef``
    their relief. The number is the fraction left over when column 10 picks the second of ``n_faces`` real faces
    (:func:`sources`): uniform and independent of that pick, so no new number is drawn and every identity's other
    numbers, and what they choose, stay as they were."""
    v = ((coef[:, 10].double() * n_faces).frac() * 2 * n_pool).long().clamp_(0, 2 * n_pool - 1)
    return v % n_pool, v >= n_pool


def _bank(mdl: dict) -> dict:
    """What :func:`sample_textures` reads, derived once per model: the faces with :data:`CHROMA` of their colour
    variation (desaturation is linear, so it commutes with the blending) and their low-frequency luminance divided
    out at :data:`LFW_RELIEF`'s power (blurring is linear too, so this is nearly the photofit's own low frequencies),
    stacked with their mirror images; the LFW reliefs at the texture's size, with their mirror images; the pixel
    window of each region's mask."""
    use_lfw = LFW_RELIEF > 0 and "lfw_relief" in mdl
    key = ("bank", CHROMA, LFW_RELIEF if use_lfw else 0.0, LFW_SIGMA)
    if key not in mdl:
        f = mdl["faces"]
        grey = f.mean(1, keepdim=True)
        f = grey + CHROMA * (f - grey)
        relief = None
        if use_lfw:
            # the photofit's low-frequency luminance is divided out at LFW_RELIEF's strength; the LFW face's relief
            # (enlarged to the texture's size, mirrored or not) comes in instead
            import cv2
            power = LFW_RELIEF
            lum = f.mean(1).clamp_min(0.05).cpu().numpy()
            low = np.stack([cv2.GaussianBlur(x, (0, 0), LFW_SIGMA) for x in lum])
            f = f / torch.as_tensor(low, device=f.device).clamp_min(0.05)[:, None] ** power
            r = torch.nn.functional.interpolate(mdl["lfw_relief"][:, None], size=f.shape[-1], mode="bilinear",
                                                align_corners=False).clamp_min(0.05) ** power
            relief = torch.cat([r, r.flip(-1)]).contiguous()
        windows = []
        for m in mdl["masks"]:
            rows, cols = torch.nonzero(m.amax(1) > 1e-3)[:, 0], torch.nonzero(m.amax(0) > 1e-3)[:, 0]
            windows.append((slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)))
        R = f.shape[-1]
        ys = (torch.arange(R, dtype=torch.float32, device=f.device) + 0.5) * 2 / R - 1
        eye_y = float(mean_shape()[36:48, 1].mean()) + UPPER_CUT
        upper = mdl["masks"][0] * torch.sigmoid((eye_y - ys) / UPPER_SOFT)[:, None]
        rows = torch.nonzero(upper.amax(1) > 1e-3)[:, 0]
        upper_win = (slice(int(rows.min()), int(rows.max()) + 1), windows[0][1])
        mdl[key] = {"faces": torch.cat([f, f.flip(-1)]).contiguous(), "windows": windows, "upper": upper,
                    "upper_window": upper_win, "relief": relief}
    return mdl[key]


def sample_textures(coef: torch.Tensor, device=None) -> torch.Tensor:
    """Detail maps (n, 3, R, R) in the frontal frame of identities with appearance numbers ``coef``
    (n, :func:`n_components`; with only the first N_COEF the upper skin is not drawn apart): a photofit of real faces
    (lower and upper skin, brows, eyes, nose and mouth each from a real face, mirrored or not, with soft seams), with
    a second face blended in; the photos' colour casts (their lighting, not the people) keep
    :data:`CHROMA` of their strength; the low-frequency luminance is an LFW face's (:data:`LFW_RELIEF`,
    :func:`pool_choice`)."""
    mdl = appearance_model(device)
    bank = _bank(mdl)
    faces, masks, windows = bank["faces"], mdl["masks"], bank["windows"]
    n_faces = mdl["faces"].shape[0]
    calm = torch.nonzero(mdl["happy"].cpu() < 0.5)[:, 0]
    src, mirrored, second, beta = sources(coef.cpu(), n_faces, calm)
    dev = faces.device
    idx = (src + n_faces * mirrored.long()).to(dev)                     # rows of the bank (mirrors after the faces)
    out = faces[idx[:, 0]]
    if coef.shape[1] >= N_COEF + N_EXTRA:                               # the upper skin from any face
        up = ((coef[:, N_COEF] * n_faces).long().clamp_(0, n_faces - 1)
              + n_faces * (coef[:, N_COEF + 1] > 0.5).long()).to(dev)
        rs, cs = bank["upper_window"]
        out[:, :, rs, cs].lerp_(faces[:, :, rs, cs][up], bank["upper"][rs, cs])
    for r in range(1, 5):                                               # each region only in its own window
        rs, cs = windows[r]
        out[:, :, rs, cs].lerp_(faces[:, :, rs, cs][idx[:, r]], masks[r, rs, cs])
    rs, cs = windows[0]                                                 # outside the face region every map is 1
    other = faces[:, :, rs, cs][(second + n_faces * (~mirrored[:, 0]).long()).to(dev)]
    out[:, :, rs, cs].lerp_(other, beta.to(dev).view(-1, 1, 1, 1))
    if bank["relief"] is not None:
        n_pool = mdl["lfw_relief"].shape[0]
        k, flip = pool_choice(coef.cpu(), n_faces, n_pool)
        out[:, :, rs, cs].mul_(bank["relief"][:, :, rs, cs][(k + n_pool * flip.long()).to(dev)])
    return out


if __name__ == "__main__":
    from facelab import checkpoints

    state, log = build(SETTINGS)
    checkpoints.save(NAME, state, settings=SETTINGS, log=log, restore=RESTORE)
    print(f"saved {NAME}: {log['faces']} faces")
