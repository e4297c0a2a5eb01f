"""Shared test settings: no display, no hub access, deterministic and quiet."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FACELAB_PROGRESS", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any test module imports torch (see facelab/__init__)
