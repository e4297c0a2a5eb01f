"""The canonical-basis pipeline of Vodrahalli, Wei and Zou (arXiv 2503.24150), step by step (chapter 12).

1. :func:`embed_reasons`: embed each distinct fine-grained reason with the MiniLM sentence encoder
   (:class:`facelab.models.text.MiniLMTextEncoder`), cached on disk by content hash under ``data/cache/``.
2. :func:`cluster_reasons`: spherical k-means of the embeddings into candidate categories.
3. :func:`select_categories`: greedy selection of categories by coverage: at each step the category that covers
   the most not-yet-covered comparisons (a comparison is covered when one of its reasons lies in a chosen category).
4. :func:`rater_category_matrix`: the rater x category matrix (share of each rater's comparisons whose reasons fall
   in each category).
5. Two measures of "how much K categories capture", as functions of K: :func:`coverage_curve` (share of
   comparisons covered) and :func:`explained_variance_curve` (variance of the rater x category matrix explained by
   K components of PCA or NMF); :func:`bootstrap_curves` resamples raters for intervals.
6. :func:`cluster_recovery`: adjusted Rand index between clusters and planted parent categories.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["embed_reasons", "cluster_reasons", "select_categories", "coverage_curve", "rater_category_matrix",
           "explained_variance_curve", "bootstrap_curves", "cluster_recovery", "check_K"]


def check_K(K, n_categories: int, name: str = "K") -> int:
    """``K`` as an int in ``1..n_categories`` or a ``ValueError`` saying so."""
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"{name} must be a positive integer, got {K!r}")
    if K > n_categories:
        raise ValueError(f"{name}={K} is larger than the number of categories ({n_categories}); "
                         f"choose {name} <= {n_categories}")
    return int(K)


# ---------------------------------------------------------------------------------------------- 1. embed
def embed_reasons(texts, *, encoder=None, cache_dir: str | Path | None = None, device="cpu") -> np.ndarray:
    """Unit-length MiniLM embeddings ``(n, 384)`` of ``texts`` (a list of strings).

    The array is cached as ``<cache_dir>/minilm-<sha256 of the texts>.npy`` (default ``data/cache/preferences``), so
    a second run with the same reasons reads it instead of running the encoder."""
    from facelab.models.text import check_texts

    texts = check_texts(texts)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:24]
    if cache_dir is None:
        from facelab import DATA_DIR

        cache_dir = DATA_DIR / "cache" / "preferences"
    path = Path(cache_dir) / f"minilm-{digest}.npy"
    if path.exists():
        emb = np.load(path)
        if emb.shape == (len(texts), 384):
            return emb
    if encoder is None:
        from facelab.models.text import MiniLMTextEncoder

        encoder = MiniLMTextEncoder(device=device, batch_size=256)
    emb = encoder(texts).detach().float().cpu().numpy()
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    from facelab.files import atomic_write_bytes
    import io

    buf = io.BytesIO()
    np.save(buf, emb.astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return emb.astype(np.float32)


# -------------------------------------------------------------------------------------------- 2. cluster
def cluster_reasons(embeddings, n_clusters: int, *, weights=None, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """Cluster id of each distinct reason: k-means on unit-length embeddings (spherical k-means).

    ``weights`` (optional, one per reason): how often each distinct reason was named; the clustering then follows
    the mass of the reasons, as it would when every extracted reason is clustered, and a long tail of one-off
    reasons does not pull the centres towards itself."""
    from sklearn.cluster import KMeans

    X = np.asarray(embeddings, dtype=np.float64)
    if X.ndim != 2 or len(X) < 1:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {X.shape}")
    n_clusters = check_K(n_clusters, len(X), "n_clusters")
    X = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
    if weights is not None:
        weights = np.asarray(weights, float)
        if weights.shape != (len(X),) or (weights < 0).any():
            raise ValueError(f"weights must be {len(X)} non-negative numbers, one per reason")
    return KMeans(n_clusters, n_init=n_init, random_state=seed).fit_predict(X, sample_weight=weights)


# ---------------------------------------------------------------------------------------- 3. greedy select
def _membership(comparison, category, n_comparisons: int, n_categories: int):
    from scipy import sparse

    comparison, category = np.asarray(comparison), np.asarray(category)
    keep = category >= 0
    M = sparse.csr_matrix((np.ones(keep.sum()), (comparison[keep], category[keep])),
                          shape=(n_comparisons, n_categories))
    M.data[:] = 1.0
    return M.tocsc()


def select_categories(comparison, category, K: int, *, n_comparisons: int | None = None,
                      n_categories: int | None = None) -> tuple[list[int], np.ndarray]:
    """Greedy max-coverage selection of ``K`` categories.

    ``comparison[m]`` and ``category[m]`` say that reason ``m`` (of some comparison) belongs to a category; a
    category of -1 (no parent, an idiosyncratic reason) covers nothing. Returns the chosen categories in order and
    the coverage after each step (share of all comparisons with at least one reason in a chosen category)."""
    comparison, category = np.asarray(comparison, int), np.asarray(category, int)
    if comparison.shape != category.shape:
        raise ValueError("comparison and category must have one entry per reason")
    n_comparisons = int(n_comparisons if n_comparisons is not None else comparison.max() + 1)
    n_categories = int(n_categories if n_categories is not None else max(category.max() + 1, 1))
    K = check_K(K, n_categories)
    M = _membership(comparison, category, n_comparisons, n_categories)
    covered = np.zeros(n_comparisons, bool)
    chosen, coverage = [], []
    for _ in range(K):
        gain = np.asarray(M[~covered].sum(0)).ravel()
        gain[chosen] = -1
        k = int(np.argmax(gain))
        chosen.append(k)
        covered |= np.asarray(M[:, k].todense()).ravel() > 0
        coverage.append(covered.mean())
    return chosen, np.asarray(coverage)


def coverage_curve(comparison, category, K_max: int, **kw) -> pd.Series:
    """Share of comparisons covered by the first K greedily chosen categories, K = 1..K_max."""
    _, cov = select_categories(comparison, category, K_max, **kw)
    return pd.Series(cov, index=pd.RangeIndex(1, len(cov) + 1, name="K"), name="share of comparisons covered")


# ---------------------------------------------------------------------------------- 4. rater x category
def rater_category_matrix(rater, comparison, category, n_raters: int | None = None,
                          n_categories: int | None = None, *, empty: str = "raise") -> np.ndarray:
    """``(n_raters, n_categories)``: share of each rater's comparisons that name a reason in each category.

    ``rater[n]`` is the rater of comparison ``n``; ``comparison`` / ``category`` are per reason (category -1 = no
    parent, counted in the rater's total but in no column). A rater with no comparisons raises a ``ValueError``
    (``empty="raise"``) or gets a row of zeros (``empty="zeros"``) or is dropped (``empty="drop"``)."""
    rater = np.asarray(rater, int)
    comparison, category = np.asarray(comparison, int), np.asarray(category, int)
    n_raters = int(n_raters if n_raters is not None else rater.max() + 1)
    n_categories = int(n_categories if n_categories is not None else category.max() + 1)
    if empty not in ("raise", "zeros", "drop"):
        raise ValueError(f"empty must be 'raise', 'zeros' or 'drop', got {empty!r}")
    totals = np.bincount(rater, minlength=n_raters).astype(float)
    M = _membership(comparison, category, len(rater), n_categories)
    from scipy import sparse

    R = sparse.csr_matrix((np.ones(len(rater)), (rater, np.arange(len(rater)))), shape=(n_raters, len(rater)))
    counts = np.asarray((R @ M).todense())
    missing = np.flatnonzero(totals == 0)
    if missing.size and empty == "raise":
        raise ValueError(f"{missing.size} rater(s) have no comparisons (first: rater {missing[0]}); pass "
                         "empty='drop' to leave them out or empty='zeros' to keep a row of zeros")
    X = counts / np.maximum(totals, 1)[:, None]
    if empty == "drop":
        X = X[totals > 0]
    return X


# --------------------------------------------------------------------------------------------- 5. spectra
def explained_variance_curve(X, K_max: int, *, method: str = "pca", seed: int = 0) -> pd.Series:
    """Share of the variance across raters explained by K components, K = 1..K_max.

    ``pca``: cumulative explained-variance ratio of the centred matrix. ``nmf``: ``1 - ||X - WH||^2 / ||X -
    mean||^2`` for a rank-K non-negative factorisation (the same centred denominator as PCA, so the two are on one
    scale; NMF is fitted to the uncentred counts, as counts are non-negative)."""
    X = np.asarray(X, float)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"X must be a (raters, categories) matrix with at least 2 raters, got shape {X.shape}")
    K_max = check_K(K_max, min(X.shape), "K_max")
    centred = X - X.mean(0)
    total = (centred ** 2).sum()
    if total == 0:
        raise ValueError("all raters have the same profile: there is no variance to explain")
    if method == "pca":
        s = np.linalg.svd(centred, compute_uv=False) ** 2
        vals = np.cumsum(s)[:K_max] / s.sum()
    elif method == "nmf":
        import warnings

        from sklearn.decomposition import NMF
        from sklearn.exceptions import ConvergenceWarning

        vals = []
        for k in range(1, K_max + 1):
            m = NMF(k, init="nndsvda", max_iter=1000, random_state=seed, tol=1e-3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # the residual is what is reported
                W = m.fit_transform(np.clip(X, 0, None))
            vals.append(1 - ((X - W @ m.components_) ** 2).sum() / total)
        vals = np.asarray(vals)
    else:
        raise ValueError(f"method must be 'pca' or 'nmf', got {method!r}")
    return pd.Series(vals, index=pd.RangeIndex(1, K_max + 1, name="K"), name=f"variance explained ({method})")


def bootstrap_curves(rater, comparison, category, K_max: int, *, n_boot: int = 200, nmf_Ks=(), alpha: float = 0.05,
                     n_categories: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Coverage and PCA variance explained for K = 1..K_max (and NMF at ``nmf_Ks``) with percentile intervals
    from resampling raters with replacement (each resample keeps a rater's comparisons together).

    Returns a frame indexed by K with columns ``<measure>``, ``<measure>_lo``, ``<measure>_hi`` for measure in
    ``coverage``, ``pca`` (and ``nmf`` where computed, else NaN)."""
    rater = np.asarray(rater, int)
    comparison, category = np.asarray(comparison, int), np.asarray(category, int)
    n_categories = int(n_categories if n_categories is not None else category.max() + 1)
    K_max = check_K(K_max, n_categories, "K_max")
    n_raters = rater.max() + 1
    X = rater_category_matrix(rater, comparison, category, n_raters, n_categories, empty="drop")
    per_rater_comps = pd.Series(np.arange(len(rater))).groupby(rater).apply(np.asarray)
    reason_of = pd.Series(np.arange(len(comparison))).groupby(comparison).apply(np.asarray)
    raters = per_rater_comps.index.to_numpy()

    def measures(Xb, comp_idx):
        # coverage on the resampled comparisons (greedy selection redone on the resample)
        ridx = np.concatenate([reason_of.get(c, np.empty(0, int)) for c in comp_idx]) if len(comp_idx) else []
        ridx = np.asarray(ridx, int)
        remap = np.full(len(rater), -1)
        remap[comp_idx] = np.arange(len(comp_idx))
        # repeated comparisons (a rater drawn twice) each count: map by position
        pos = np.repeat(np.arange(len(comp_idx)), [len(reason_of.get(c, [])) for c in comp_idx])
        _, cov = select_categories(pos, category[ridx], K_max, n_comparisons=len(comp_idx),
                                   n_categories=n_categories)
        pca = explained_variance_curve(Xb, min(K_max, min(Xb.shape)), method="pca").to_numpy()
        return cov, np.pad(pca, (0, K_max - len(pca)), constant_values=1.0)

    cov0, pca0 = measures(X, np.arange(len(rater)))
    rng = np.random.default_rng(seed)
    cov_b, pca_b, nmf_b = [], [], []
    nmf_Ks = [int(k) for k in nmf_Ks]
    nmf0 = {k: explained_variance_curve(X, k, method="nmf", seed=seed).iloc[-1] for k in nmf_Ks}
    for b in range(n_boot):
        pick = rng.integers(0, len(raters), len(raters))
        comp_idx = np.concatenate([per_rater_comps.iloc[i] for i in pick])
        c, p = measures(X[pick], comp_idx)
        cov_b.append(c)
        pca_b.append(p)
        if nmf_Ks and b < max(20, n_boot // 10):
            nmf_b.append({k: explained_variance_curve(X[pick], k, method="nmf", seed=seed).iloc[-1]
                          for k in nmf_Ks})
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out = pd.DataFrame(index=pd.RangeIndex(1, K_max + 1, name="K"))
    for name, est, boots in (("coverage", cov0, cov_b), ("pca", pca0, pca_b)):
        lo, hi = np.percentile(np.asarray(boots), q, axis=0)
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = est, lo, hi
    out["nmf"] = out["nmf_lo"] = out["nmf_hi"] = np.nan
    for k in nmf_Ks:
        vals = [d[k] for d in nmf_b]
        out.loc[k, ["nmf", "nmf_lo", "nmf_hi"]] = [nmf0[k], *np.percentile(vals, q)]
    return out


# ---------------------------------------------------------------------------------------- 6. recovery
def cluster_recovery(parent, cluster) -> float:
    """Adjusted Rand index between planted parent categories and found clusters, over the reasons that have a
    parent (``parent >= 0``; idiosyncratic reasons, parent -1 or None, are left out)."""
    from sklearn.metrics import adjusted_rand_score

    parent = np.asarray([-1 if p is None else p for p in parent], int)
    cluster = np.asarray(cluster)
    if parent.shape != cluster.shape:
        raise ValueError(f"parent and cluster must have one entry per reason, got {parent.shape} and "
                         f"{cluster.shape}")
    keep = parent >= 0
    if not keep.any():
        raise ValueError("no reason has a parent category: cluster recovery needs planted parents")
    return float(adjusted_rand_score(parent[keep], cluster[keep]))
