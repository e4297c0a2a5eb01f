"""A face-edit preference world whose low-rank structure is planted (chapter 12, *A canonical basis of preferences*).

Vodrahalli, Wei and Zou (arXiv 2503.24150) extract about 5,000 fine-grained reasons from binary human ratings and
find 21 categories that capture over 89 % of the variation across people. No individual-level rating data can be had
offline, so this module builds a world in which the answer is known:

1. **Items** are faces rendered by :class:`facelab.synth.FaceWorld`; each carries ``K`` attribute values, one per
   planted category (smile, frontal pose, sharpness, ... read from the renderer's own labels or measured on the
   rendered pixels, see :data:`CATEGORIES`), standardised over the item pool. A world with more categories than
   the 21 renderable ones adds *latent* attributes (random per item, not rendered): used by the controls only.
2. **Raters** have sparse latent weights over the ``K`` categories (a few categories each, popularity Zipf-like,
   a minority preferring *less* of a category).
3. **Choices** follow a Bradley-Terry (logit) model, ``P(i beats j) = sigmoid(beta * w_r . (a_i - a_j))``; with
   probability ``epsilon`` a choice is idiosyncratic instead (a coin flip with a one-off reason).
4. **Reasons**: each choice names one or two reasons, the categories that contributed most to the winner, as a
   fine-grained string from the grammar *category x facet x direction x context* (21 x 4 x 2 x 30 = 5,040 strings);
   an idiosyncratic choice names a one-off reason from a separate long-tail grammar, with no parent category.

:func:`make_world` returns a :class:`PreferenceWorld` holding the items, raters, comparisons and reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Category", "CATEGORIES", "CONTEXTS", "Comparisons", "PreferenceWorld", "face_attributes",
           "sample_raters", "simulate_choices", "make_world", "reason_text", "check_comparisons"]


@dataclass(frozen=True)
class Category:
    """A planted preference category: its name, the facets a reason may name, the words for more/less of it,
    and where its attribute comes from (a label of the rendered face or a measurement of its pixels)."""

    name: str
    facets: tuple[str, ...]
    more: str
    less: str
    source: str


def _c(name, facets, more, less, source):
    return Category(name, tuple(facets), more, less, source)


#: The 21 renderable categories (order = the order used when a world plants fewer).
CATEGORIES: tuple[Category, ...] = (
    _c("smile", ["smiling", "a big smile", "a smiling mouth", "smile width"], "more", "less", "AU12"),
    _c("genuine smile", ["smiling eyes", "crinkled smiling eyes", "a genuine Duchenne smile",
                         "eyes that smile with the mouth"], "more", "less", "AU06"),
    _c("frontal pose", ["head turned to face the camera", "a frontal head pose", "facing the camera straight on",
                        "head turned away from the camera"], "more", "less", "-|yaw|"),
    _c("upright head", ["head tilted sideways", "a sideways head tilt", "head tilted to one shoulder",
                        "a tilted head"], "less", "more", "-|roll|"),
    _c("level chin", ["chin raised or lowered", "head nodding up or down", "chin tilted up",
                      "chin tilted down"], "less", "more", "-|pitch|"),
    _c("frontal light", ["lighting from the front", "frontal lighting", "even front lighting",
                         "light hitting the face head-on"], "more", "less", "-|light_azimuth|"),
    _c("brightness", ["brightness", "a brighter exposure", "a bright, well exposed photo", "exposure brightness"],
       "more", "less", "light_intensity"),
    _c("overhead light", ["lighting from above", "overhead lighting", "a lamp shining from above",
                          "top-down lighting"], "more", "less", "light_elevation"),
    _c("sharpness", ["sharp focus", "a sharply focused photo", "sharpness", "crisp, in-focus details"],
       "more", "less", "-blur"),
    _c("clean image", ["image noise", "grainy noise", "noisy grain in the photo", "sensor noise speckles"],
       "less", "more", "-noise"),
    _c("compression quality", ["JPEG compression artefacts", "blocky JPEG compression", "compression artefacts",
                               "JPEG blockiness"], "less", "more", "jpeg_quality"),
    _c("resolution", ["image resolution", "a high-resolution photo", "resolution and pixel detail",
                      "more pixels of resolution"], "more", "less", "resolution"),
    _c("glasses", ["eyeglasses", "glasses on the face", "wearing spectacles", "eyeglass frames"],
       "with", "without", "glasses"),
    _c("beard", ["a beard", "facial hair and beard", "a bearded chin", "beard stubble"], "with", "without",
       "beard"),
    _c("lipstick", ["lipstick", "lipstick on the lips", "coloured lipstick", "bold lipstick"], "with", "without",
       "lipstick"),
    _c("eye makeup", ["eye makeup", "eyeshadow makeup", "eyeliner makeup", "made-up eyes with makeup"],
       "with", "without", "eye makeup"),
    _c("expression intensity", ["facial expression intensity", "an intense facial expression",
                                "a strongly expressive face", "expressiveness of the face"], "more", "less",
       "sum of AUs"),
    _c("relaxed brow", ["frowning", "a frowning brow", "furrowed frowning eyebrows", "a frown"], "less", "more",
       "-AU04"),
    _c("open mouth", ["an open mouth", "mouth opened wide", "parted open lips", "the mouth hanging open"],
       "more", "less", "AU25 + AU26"),
    _c("colour warmth", ["warm colour tones", "warm orange colour", "colour warmth", "a warm colour cast"],
       "more", "less", "mean red - mean blue (pixels)"),
    _c("contrast", ["contrast", "high contrast", "image contrast", "punchy contrast"], "more", "less",
       "std of luminance (pixels)"),
)

#: Contexts a fine-grained reason may name (the fourth factor of the grammar).
CONTEXTS: tuple[str, ...] = (
    "for a passport photo", "for a dating profile", "for a job application", "for a company website",
    "for a family album", "for a school yearbook", "for a social media avatar", "for a conference badge",
    "for a wedding invitation", "for a video call thumbnail", "for a news article", "for an actor's headshot",
    "for a student ID", "for a gym membership card", "for a church newsletter", "for a book cover",
    "for a music album", "for a sports team page", "for a hospital badge", "for a political poster",
    "for a birthday card", "for a travel visa", "for a museum catalogue", "for a podcast cover",
    "for a real-estate agent's card", "for a charity flyer", "for a memorial page", "for a fan club",
    "for a science fair poster", "for a loyalty card",
)

_TAIL_SUBJECTS = ("the", "that", "this one's", "the second", "the left", "the first")
_TAIL_THINGS = ("hair parting", "ear shape", "collar", "earlobe", "nostril", "hairline", "eyebrow gap",
                "forehead wrinkle", "skin freckle", "mole", "eye colour", "jawline", "neck", "tooth gap")
_TAIL_FEELINGS = ("reminds me of my", "looks like my", "feels like my", "has the vibe of my", "resembles my",
                  "brings back memories of my", "makes me think of my")
_TAIL_PEOPLE = ("cousin", "old teacher", "neighbour", "dentist", "landlord", "ex", "grandfather", "barber",
                "childhood friend", "football coach", "piano teacher", "first boss", "uncle", "aunt", "postman",
                "favourite actor", "bus driver", "pharmacist", "roommate", "sister-in-law")
_TAIL_PLACES = ("in Lisbon", "at summer camp", "from the nineties", "on a rainy day", "at the bakery",
                "in a dream I had", "at the airport", "from a cartoon", "in high school", "at the lake",
                "in a museum", "during the holidays", "from television", "at the market", "on the train")


def reason_text(category: Category, facet: str, direction: int, context: str | None = None) -> str:
    """The reason string of the grammar (``direction`` +1: more of the category, -1: less); with ``context`` the
    full fine-grained reason, without it the core that the pipeline embeds."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    word = category.more if direction > 0 else category.less
    return f"{word} {facet}" if context is None else f"{word} {facet} {context}"


def _tail_reason(rng) -> str:
    return " ".join((rng.choice(_TAIL_SUBJECTS), rng.choice(_TAIL_THINGS), rng.choice(_TAIL_FEELINGS),
                     rng.choice(_TAIL_PEOPLE), rng.choice(_TAIL_PLACES)))


# ------------------------------------------------------------------------------------------------------ items
def face_attributes(batch) -> pd.DataFrame:
    """The 21 category attributes of rendered faces (one column per :data:`CATEGORIES` name, raw units).

    ``batch`` is a :class:`facelab.synth.FaceBatch`: labels for what the renderer set, pixels for warmth and
    contrast."""
    lab = batch.labels
    img = batch.images.detach().float().cpu()
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"face_attributes needs RGB images (N, 3, H, W), got {tuple(img.shape)}")
    au_cols = [c for c in lab.columns if c.startswith("AU")]
    grey = img.mean(1)
    col = {
        "smile": lab["AU12"], "genuine smile": lab["AU06"], "frontal pose": -lab["yaw"].abs(),
        "upright head": -lab["roll"].abs(), "level chin": -lab["pitch"].abs(),
        "frontal light": -lab["light_azimuth"].abs(), "brightness": lab["light_intensity"],
        "overhead light": lab["light_elevation"], "sharpness": -lab["blur"], "clean image": -lab["noise"],
        "compression quality": lab["jpeg_quality"], "resolution": lab["resolution"],
        "glasses": lab["glasses"].astype(float), "beard": (lab["beard"].fillna("none").astype(str) != "none").astype(float),
        "lipstick": (lab["lipstick"].fillna("none").astype(str) != "none").astype(float),
        "eye makeup": ((lab["eyeshadow"].fillna("none").astype(str) != "none")
                       | (lab["eyeliner"].fillna("none").astype(str) != "none")).astype(float),
        "expression intensity": lab[au_cols].sum(axis=1), "relaxed brow": -lab["AU04"],
        "open mouth": lab["AU25"] + lab["AU26"],
        "colour warmth": pd.Series((img[:, 0].mean((1, 2)) - img[:, 2].mean((1, 2))).numpy(), index=lab.index),
        "contrast": pd.Series(grey.flatten(1).std(1).numpy(), index=lab.index),
    }
    return pd.DataFrame({c.name: np.asarray(col[c.name], dtype=float) for c in CATEGORIES}, index=lab.index)


def _standardise(a: np.ndarray) -> np.ndarray:
    sd = a.std(0)
    sd[sd == 0] = 1.0
    return (a - a.mean(0)) / sd


# ----------------------------------------------------------------------------------------------------- raters
def sample_raters(n_raters: int, n_categories: int, *, mean_active: float = 2.5, flip: float = 0.15,
                  seed: int = 0) -> np.ndarray:
    """Sparse rater weights ``(n_raters, n_categories)``: each rater weighs ``1 + Poisson(mean_active - 1)``
    categories, drawn with Zipf-like popularity; magnitudes log-normal; a share ``flip`` prefer *less* of one."""
    if n_raters < 1 or n_categories < 1:
        raise ValueError(f"need at least one rater and one category, got {n_raters} and {n_categories}")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_categories + 1) ** 0.6
    popularity /= popularity.sum()
    W = np.zeros((n_raters, n_categories))
    for r in range(n_raters):
        s = int(min(n_categories, 1 + rng.poisson(max(mean_active - 1, 0))))
        ks = rng.choice(n_categories, size=s, replace=False, p=popularity)
        W[r, ks] = rng.lognormal(0.0, 0.4, size=s) * np.where(rng.random(s) < flip, -1.0, 1.0)
    return W


# ------------------------------------------------------------------------------------------------ comparisons
@dataclass
class Comparisons:
    """Binary choices: rater ``rater[n]`` compared items ``left[n]`` and ``right[n]``; ``winner[n]`` is the item
    chosen. ``reasons`` has one row per named reason: ``comparison``, ``fine_grained`` (the full reason of the
    grammar, with its context), ``text`` (its core without the context, what the pipeline embeds: with the context
    the sentence embeddings cluster by context, not by category), ``parent`` (category index, or -1 for an
    idiosyncratic reason), ``direction``."""

    rater: np.ndarray
    left: np.ndarray
    right: np.ndarray
    winner: np.ndarray
    reasons: pd.DataFrame

    def __len__(self) -> int:
        return len(self.rater)

    @property
    def loser(self) -> np.ndarray:
        return np.where(self.winner == self.left, self.right, self.left)


def check_comparisons(left, right, winner=None) -> None:
    """Refuse a comparison of an item with itself and a winner that is neither item (ties are not choices here:
    pass a tie as half a win to :func:`facelab.preferences.elo.win_matrix`)."""
    left, right = np.asarray(left), np.asarray(right)
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same length, got {left.shape} and {right.shape}")
    same = np.flatnonzero(left == right)
    if same.size:
        raise ValueError(f"comparison {same[0]} compares item {left[same[0]]} with itself; "
                         "a pairwise choice needs two different items")
    if winner is not None:
        winner = np.asarray(winner)
        bad = np.flatnonzero((winner != left) & (winner != right))
        if bad.size:
            raise ValueError(f"comparison {bad[0]}: winner {winner[bad[0]]} is neither item "
                             f"({left[bad[0]]}, {right[bad[0]]}); a tie is not a winner")


def simulate_choices(attributes: np.ndarray, weights: np.ndarray, n_per_rater: int, *, epsilon: float = 0.1,
                     beta: float = 2.0, second_reason: float = 0.5, categories=None, seed: int = 0,
                     pairs=None) -> Comparisons:
    """Bradley-Terry choices of every rater between random item pairs, with their fine-grained reasons.

    Parameters
    ----------
    attributes : (n_items, K) standardised attribute values.
    weights : (n_raters, K) rater weights (:func:`sample_raters`).
    n_per_rater : comparisons per rater (ignored when ``pairs`` is given).
    epsilon : share of idiosyncratic choices (coin flip, one-off reason without a parent category).
    beta : inverse temperature of the logit choice.
    second_reason : a second category is named when its contribution is at least this share of the first.
    categories : :class:`Category` per column (default: :data:`CATEGORIES`, then latent ones for extra columns).
    pairs : optional (rater, left, right) arrays to judge instead of random pairs.
    """
    A, W = np.asarray(attributes, float), np.asarray(weights, float)
    if A.ndim != 2 or W.ndim != 2 or A.shape[1] != W.shape[1]:
        raise ValueError(f"attributes (n_items, K) and weights (n_raters, K) must share K, got {A.shape} and "
                         f"{W.shape}")
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
    cats = list(categories) if categories is not None else world_categories(A.shape[1])
    rng = np.random.default_rng(seed)
    if pairs is None:
        if A.shape[0] < 2:
            raise ValueError("need at least two items to compare")
        rater = np.repeat(np.arange(W.shape[0]), n_per_rater)
        left = rng.integers(0, A.shape[0], rater.size)
        right = (left + rng.integers(1, A.shape[0], rater.size)) % A.shape[0]
    else:
        rater, left, right = (np.asarray(p) for p in pairs)
    check_comparisons(left, right)
    diff = A[left] - A[right]                                     # (n, K)
    contrib = W[rater] * diff                                     # each category's pull towards `left`
    p_left = 1.0 / (1.0 + np.exp(-beta * contrib.sum(1)))
    idio = rng.random(rater.size) < epsilon
    left_wins = np.where(idio, rng.random(rater.size) < 0.5, rng.random(rater.size) < p_left)
    winner = np.where(left_wins, left, right)
    # contributions towards the winner; a choice against the utility is rationalised by the largest pull
    toward = np.where(left_wins[:, None], contrib, -contrib)
    order = np.argsort(-np.abs(toward), axis=1)
    rows = []
    for n in range(rater.size):
        if idio[n]:
            tail = _tail_reason(rng)
            rows.append((n, tail, tail, -1, 0))
            continue
        k1 = order[n, 0]
        named = [k1]
        if order.shape[1] > 1 and toward[n, order[n, 1]] > 0 and abs(toward[n, order[n, 1]]) >= second_reason * abs(toward[n, k1]):
            named.append(order[n, 1])
        for k in named:
            # direction: does the winner have more or less of category k than the loser?
            d_win = diff[n, k] if left_wins[n] else -diff[n, k]
            direction = 1 if d_win >= 0 else -1
            cat = cats[k]
            facet, context = cat.facets[rng.integers(len(cat.facets))], CONTEXTS[rng.integers(len(CONTEXTS))]
            rows.append((n, reason_text(cat, facet, direction), reason_text(cat, facet, direction, context),
                         int(k), direction))
    reasons = pd.DataFrame(rows, columns=["comparison", "text", "fine_grained", "parent", "direction"])
    return Comparisons(rater, left, right, winner, reasons)


def world_categories(K: int) -> list[Category]:
    """The first ``K`` renderable categories, then latent ones (``latent 22``, ...) not tied to the renderer."""
    cats = list(CATEGORIES[:K])
    for k in range(len(cats), K):
        cats.append(_c(f"latent {k + 1}", [f"quality {k + 1}a", f"quality {k + 1}b", f"aspect {k + 1}",
                                           f"feature {k + 1}"], "more", "less", "latent (not rendered)"))
    return cats


@dataclass
class PreferenceWorld:
    """Items (attributes, optional rendered images), raters (weights) and their comparisons."""

    categories: list[Category]
    attributes: np.ndarray
    weights: np.ndarray
    comparisons: Comparisons
    epsilon: float
    images: object = None
    item_labels: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)

    @property
    def K(self) -> int:
        return len(self.categories)

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    def __repr__(self) -> str:
        n_reasons = self.comparisons.reasons["fine_grained"].nunique()
        return (f"PreferenceWorld(K={self.K}, items={len(self.attributes)}, raters={len(self.weights)}, "
                f"comparisons={len(self.comparisons)}, distinct reasons={n_reasons}, epsilon={self.epsilon})")


def make_world(K: int = 21, *, n_items: int = 300, n_raters: int = 300, n_per_rater: int = 60,
               epsilon: float = 0.1, beta: float = 2.0, mean_active: float = 2.5, face_world=None,
               seed: int = 0) -> PreferenceWorld:
    """A preference world with ``K`` planted categories.

    With a :class:`facelab.synth.FaceWorld` ``face_world``, the items are rendered faces (nuisance "full", random
    expressions and make-up) and the first ``min(K, 21)`` attributes are measured on them (:func:`face_attributes`);
    without one (the fast controls), or for ``K > 21``, attributes are drawn at random (latent)."""
    if K < 1:
        raise ValueError(f"K must be a positive number of categories, got {K}")
    rng = np.random.default_rng(seed)
    cats = world_categories(K)
    A = rng.standard_normal((n_items, K))
    images = labels = None
    if face_world is not None:
        import torch

        batch = face_world.sample(n_identities=n_items, nuisance="full", expression="random", makeup="random",
                                  generator=torch.Generator().manual_seed(seed))
        measured = face_attributes(batch)
        k = min(K, len(CATEGORIES))
        A[:, :k] = measured.iloc[:, :k].to_numpy()
        images, labels = batch.images, measured
    A = _standardise(A)
    W = sample_raters(n_raters, K, mean_active=mean_active, seed=seed + 1)
    comps = simulate_choices(A, W, n_per_rater, epsilon=epsilon, beta=beta, categories=cats, seed=seed + 2)
    return PreferenceWorld(cats, A, W, comps, epsilon, images, labels,
                           {"beta": beta, "mean_active": mean_active, "seed": seed})
