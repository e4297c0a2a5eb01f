"""Runtime conventions shared by every chapter: profile, device, seed, threads, progress bars.

A chapter's parameters cell holds ``PROFILE``, ``DEVICE`` and ``SEED``; its first code cell calls::

    from facelab import runtime
    P = runtime.setup(PROFILE, DEVICE, SEED)
    n_faces = P.pick(quick=2_000, full=200_000)

so that sizes are written once and the same code runs the CPU "quick" profile and the paper-scale "full" one.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, TypeVar

import numpy as np

PROFILES = ("quick", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")

T = TypeVar("T")


class ProfileError(ValueError):
    """An unknown profile, device or seed was given to :func:`setup`."""


def resolve_device(device: str = "auto") -> "torch.device":  # noqa: F821 - torch imported lazily
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a :class:`torch.device`.

    ``"auto"`` picks CUDA, then Apple MPS, then the CPU. Asking for a device that this machine does not have is an
    error rather than a silent fallback, so a GPU run never quietly becomes a CPU run.
    """
    import torch

    if not isinstance(device, str):
        raise ProfileError(f"DEVICE must be a string such as {DEVICES}, got {device!r}")
    name = device.strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise ProfileError(f"Unknown DEVICE {device!r}: expected one of {', '.join(DEVICES)} (or 'cuda:N').")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ProfileError(
            f"DEVICE={device!r} but PyTorch sees no CUDA GPU on this machine; use DEVICE='auto' or 'cpu'."
        )
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ProfileError(f"DEVICE={device!r} but Apple MPS is not available; use DEVICE='auto' or 'cpu'.")
    return torch.device(name)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch (all devices) and return a NumPy generator for the caller."""
    import torch

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ProfileError(f"SEED must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


def default_threads() -> int:
    """Every core but one (at least one): the spare core keeps the notebook server, papermill and the OS from
    stalling torch's worker threads, which on a 2-core machine made small models many times slower with 2 threads
    than with 1. ``FACELAB_THREADS`` overrides it."""
    env = os.environ.get("FACELAB_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ProfileError(f"FACELAB_THREADS must be a positive integer, got {env!r}") from None
    return max(1, (os.cpu_count() or 1) - 1)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads in PyTorch, OpenCV and the BLAS libraries (default: :func:`default_threads`)."""
    import torch

    n = default_threads() if n is None else max(1, int(n))
    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - cv2 is a dependency, but threads are a nicety
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # numpy/scipy/scikit-learn BLAS and OpenMP pools
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    return n


def omp_wait_policy() -> dict[str, Any]:
    """How torch's OpenMP threads wait in this process, and whether facelab's default took effect.

    ``import facelab`` sets ``OMP_WAIT_POLICY=PASSIVE`` when the environment does not set it (see the comment in
    ``facelab/__init__.py``): spinning OpenMP threads slow everything down many times over when another process
    competes for the cores. The OpenMP runtime reads the variable only when torch is first imported, so the default
    does nothing if torch was imported before facelab. Returns ``{"value", "source", "effective"}`` with ``source``
    ``"environment"`` (the user, the Makefile or the Jupyter kernel spec set it) or ``"facelab"``.
    """
    import facelab

    value = os.environ.get("OMP_WAIT_POLICY", "")
    by_facelab = facelab.OMP_WAIT_POLICY_SET_BY_FACELAB
    return {
        "value": value,
        "source": "facelab" if by_facelab else "environment",
        "effective": not (by_facelab and facelab.TORCH_IMPORTED_BEFORE_FACELAB),
    }


def _warn_if_spinning() -> None:
    info = omp_wait_policy()
    if not info["effective"]:
        import warnings

        warnings.warn(
            "torch was imported before facelab, so facelab's OMP_WAIT_POLICY=PASSIVE default came too late and torch's "
            "threads spin-wait (many times slower when another process is busy). Import facelab first, or start "
            "Python with OMP_WAIT_POLICY=PASSIVE in the environment.",
            RuntimeWarning,
            stacklevel=3,
        )


@dataclass
class Profile:
    """What a chapter needs to know about the run: profile name, device, seed and a seeded RNG."""

    name: str
    device: "torch.device"  # noqa: F821
    seed: int
    threads: int
    rng: np.random.Generator = field(repr=False)

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    @property
    def full(self) -> bool:
        return self.name == "full"

    def pick(self, quick: T, full: T) -> T:
        """Return the value for the active profile: ``P.pick(quick=2_000, full=200_000)``."""
        return quick if self.name == "quick" else full

    def generator(self, offset: int = 0) -> "torch.Generator":  # noqa: F821
        """A torch generator on the CPU seeded from the run seed (``offset`` gives independent streams)."""
        import torch

        return torch.Generator().manual_seed(self.seed + int(offset))

    def progress(self, iterable: Iterable[T] | None = None, **kwargs: Any):
        """A ``tqdm.auto`` progress bar (a widget in Jupyter, text elsewhere); ``FACELAB_PROGRESS=0`` silences it."""
        return progress(iterable, **kwargs)

    def summary(self) -> str:
        return f"facelab profile={self.name} device={self.device} seed={self.seed} threads={self.threads}"


def progress(iterable: Iterable[T] | None = None, **kwargs: Any):
    """Progress bar for anything that runs longer than a few seconds."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", os.environ.get("FACELAB_PROGRESS", "1") == "0")
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def setup(profile: str = "quick", device: str = "auto", seed: int = 0, *, threads: int | None = None,
          style: bool = True, verbose: bool = True) -> Profile:
    """Validate the chapter parameters, seed everything, set threads and the figure style.

    Parameters
    ----------
    profile : {"quick", "full"}
        ``"quick"`` runs on a 2-core CPU in a few minutes; ``"full"`` is the paper-scale run for a GPU.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}
    seed : int
        Non-negative seed for Python, NumPy and PyTorch.

    Returns
    -------
    Profile
    """
    if not isinstance(profile, str) or profile.strip().lower() not in PROFILES:
        raise ProfileError(f"Unknown PROFILE {profile!r}: expected 'quick' (CPU, minutes) or 'full' (paper scale).")
    name = profile.strip().lower()
    dev = resolve_device(device)
    rng = seed_everything(seed)
    n_threads = set_threads(threads)
    _warn_if_spinning()
    if style:
        from facelab import plotting

        plotting.use_style()
    P = Profile(name=name, device=dev, seed=int(seed), threads=n_threads, rng=rng)
    if verbose:
        print(P.summary())
    return P
