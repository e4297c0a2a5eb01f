"""One way to save and load every model this project trains itself (``data/models/``).

A checkpoint ``<name>`` is two files in :data:`MODELS_DIR` (or next to any path you give):

* ``<name>.safetensors``: the tensors (no pickle), optionally with string metadata in the safetensors header;
* ``<name>.json``: the *sidecar*, written after the tensors::

      {"format": "facelab-checkpoint", "format_version": 1, "name": ..., "file": "<name>.safetensors",
       "size": <bytes>, "sha256": "<hex digest of the safetensors file>",
       "restore": "python -m facelab.antispoof.pretrain",     # the command that recreates the file
       "settings": {...},                                     # what the model was trained with
       "log": {...}}                                          # what training reported (curves, seconds, accuracy)

Both files are written atomically (temporary file in the same folder, then :func:`os.replace`), so a kill mid-write
leaves the previous checkpoint. :func:`load` checks the size and sha256 against the sidecar before the file is
parsed (the digest is cached per process, so verifying costs one read per file), and a missing, truncated, emptied,
byte-flipped or header-corrupted file is a :class:`CheckpointError` that names the file and the command that
restores it - never a silent load.

:func:`load_or_train` is what model packages build on: it loads the checkpoint when it is present, intact and was
trained with the expected ``settings``; otherwise it trains (``train_fn(settings) -> (state_dict, log)``, with the
trainer's own progress), saves and loads the result - or, with ``allow_train=False``, raises the error instead.
Notebooks call the model package (e.g. :func:`facelab.antispoof.pretrain.pretrained_clip`), never this module.

>>> from facelab import checkpoints
>>> checkpoints.save("/tmp/tiny", {"w": torch.zeros(2)}, settings={"seed": 0}, log={"loss": 0.1},
...                  restore="python -m my.trainer")                                      # doctest: +SKIP
>>> state, meta = checkpoints.load("/tmp/tiny")                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from facelab import DATA_DIR, REPO_ROOT
from facelab.files import atomic_path, atomic_write_json, sha256_file

__all__ = ["MODELS_DIR", "FORMAT", "FORMAT_VERSION", "RESTORE_COMMANDS", "CheckpointError", "CheckpointMissingError",
           "checkpoint_path", "sidecar_path", "save", "load", "load_or_train", "verify", "status", "read_sidecar",
           "flat_log"]

#: Where the project's trained checkpoints live (committed to git).
MODELS_DIR = DATA_DIR / "models"
FORMAT = "facelab-checkpoint"
FORMAT_VERSION = 1

#: The command that recreates each committed checkpoint (used when the sidecar itself is unreadable).
RESTORE_COMMANDS = {
    "antispoof_clip": "python -m facelab.antispoof.pretrain",
    "makeup_classifier": "python -m facelab.privacy.makeup",
    "synth_facenets": "python -m facelab.synth.recognisers",
    "face_vae_quick": "python -m facelab.diffusion.train",
    "face_ldm_quick": "python -m facelab.diffusion.train",
    "face_ldm_quick_base": "python -m facelab.diffusion.train",
}


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, corrupt, or was trained with other settings; the message names the file and
    the command that restores it."""


class CheckpointMissingError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist; the message names the command that trains it."""


# ------------------------------------------------------------------------------------------------- paths
def checkpoint_path(name) -> Path:
    """``"antispoof_clip"`` -> ``data/models/antispoof_clip.safetensors``; a path (``Path``, or a string with a
    folder or the ``.safetensors`` suffix) is used as given (suffix added when missing)."""
    if isinstance(name, os.PathLike) or (isinstance(name, str) and ("/" in name or os.sep in name
                                                                    or name.endswith(".safetensors"))):
        p = Path(name)
        return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")
    if not isinstance(name, str) or not name:
        raise TypeError(f"a checkpoint name is a non-empty string or a path, got {name!r}")
    return MODELS_DIR / f"{name}.safetensors"


def sidecar_path(name) -> Path:
    """The JSON sidecar next to the checkpoint (same stem, ``.json``)."""
    return checkpoint_path(name).with_suffix(".json")


def _restore_hint(path: Path, restore: str | None, sidecar: Mapping | None = None) -> str:
    cmd = restore or (sidecar or {}).get("restore") or RESTORE_COMMANDS.get(path.stem)
    hint = f"restore it with `{cmd}`" if cmd else "retrain it with its training entry point"
    if path.resolve().parent == MODELS_DIR.resolve():   # committed with the repository
        rel = path.resolve().relative_to(REPO_ROOT)
        hint += f" (or `git checkout -- {rel} {rel.with_suffix('.json')}`)"
    return hint


# ------------------------------------------------------------------------------------------------- save
def save(name, state_dict: Mapping[str, Any], *, settings: Mapping, log: Mapping | None = None,
         restore: str | None = None, header: Mapping[str, str] | None = None) -> dict:
    """Write ``state_dict`` as ``<name>.safetensors`` and its sidecar ``<name>.json``, both atomically.

    Parameters
    ----------
    name : str or path-like
        Checkpoint name in :data:`MODELS_DIR` or a path (see :func:`checkpoint_path`).
    state_dict : mapping of str -> torch.Tensor
        Saved as they are (dtype kept), after ``detach().contiguous().cpu()``.
    settings : mapping
        JSON-serialisable training settings; :func:`load_or_train` retrains when they differ from the expected ones.
    log : mapping, optional
        JSON-serialisable training report (curves, accuracy, seconds).
    restore : str, optional
        The command that recreates this checkpoint (named in every error about it).
    header : mapping of str -> str, optional
        Extra metadata stored in the safetensors header itself.

    Returns
    -------
    dict
        The sidecar as written (with ``sha256`` and ``size``).
    """
    import torch
    from safetensors.torch import save_file

    path = checkpoint_path(name)
    tensors = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"checkpoint {path.name}: state_dict[{k!r}] is a {type(v).__name__}, not a tensor")
        tensors[k] = v.detach().contiguous().cpu()
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": path.stem, "file": path.name,
               "size": None, "sha256": None, "restore": restore or RESTORE_COMMANDS.get(path.stem),
               "settings": _jsonable(settings, "settings"), "log": _jsonable(dict(log or {}), "log")}
    bad = {k: type(v).__name__ for k, v in (header or {}).items() if not isinstance(v, str)}
    if bad:
        raise TypeError(f"safetensors header values must be strings, got {bad}")
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(header) if header else None)
        sidecar["size"] = tmp.stat().st_size
        sidecar["sha256"] = sha256_file(tmp, cache=False)
    atomic_write_json(sidecar_path(path), sidecar)
    return sidecar


def _jsonable(obj, what: str):
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint {what} must be JSON-serialisable: {exc}") from exc


# ------------------------------------------------------------------------------------------------- verify / load
def read_sidecar(name, *, restore: str | None = None) -> dict:
    """The validated sidecar of a checkpoint; :class:`CheckpointError` when it is missing or unreadable."""
    path = checkpoint_path(name)
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"checkpoint {path} has no sidecar {side.name} (settings, training log, sha256), "
                              f"so it cannot be verified; {_restore_hint(path, restore)}")
    try:
        meta = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"the sidecar {side} of checkpoint {path.name} is not valid JSON ({exc}); "
                              f"{_restore_hint(path, restore)}") from None
    missing = [k for k in ("sha256", "size", "settings") if not isinstance(meta, dict) or k not in meta]
    if missing or meta.get("format") != FORMAT:
        raise CheckpointError(f"the sidecar {side} of checkpoint {path.name} is not a {FORMAT} sidecar "
                              f"(missing {missing or ['format']}); {_restore_hint(path, restore)}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"the sidecar {side} of checkpoint {path.name} has no valid format_version "
                              f"({version!r}); {_restore_hint(path, restore)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"the sidecar {side} has format version {version}, newer than this facelab "
                              f"({FORMAT_VERSION}); update facelab")
    return meta


def verify(name, *, restore: str | None = None) -> dict:
    """Check that the checkpoint exists, has a valid sidecar, and that its size and sha256 match it; returns the
    sidecar. The digest is cached per process (:func:`facelab.files.sha256_file`), so this costs one read."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise CheckpointMissingError(f"checkpoint {path} is missing; {_restore_hint(path, restore)}")
    meta = read_sidecar(path, restore=restore)
    size = path.stat().st_size
    if size != meta["size"]:
        what = "is empty" if size == 0 else f"has {size:,} bytes"
        raise CheckpointError(f"checkpoint {path} {what}, but its sidecar records {meta['size']:,} bytes "
                              f"(truncated or replaced); {_restore_hint(path, restore, meta)}")
    digest = sha256_file(path)
    if digest != meta["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: sha256 {digest[:16]}... differs from "
                              f"{meta['sha256'][:16]}... recorded in {path.with_suffix('.json').name}; "
                              f"{_restore_hint(path, restore, meta)}")
    return meta


def load(name, *, device=None, restore: str | None = None) -> tuple[dict, dict]:
    """Verified tensors and sidecar of a checkpoint: ``(state_dict, meta)``.

    ``meta`` is the sidecar plus ``"header"`` (the safetensors header metadata, a dict of strings) and ``"path"``.
    Raises :class:`CheckpointMissingError` / :class:`CheckpointError` (naming the file and its restore command).
    """
    from safetensors import SafetensorError, safe_open

    path = checkpoint_path(name)
    meta = verify(path, restore=restore)
    try:
        with safe_open(str(path), framework="pt", device=str(device) if device is not None else "cpu") as f:
            header = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:  # hash matched: the sidecar was written for a bad file
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc}); "
                              f"{_restore_hint(path, restore, meta)}") from None
    return state, {**meta, "header": header, "path": str(path)}


def status(name, settings: Mapping | None = None, *, restore: str | None = None) -> str:
    """``"ok"`` when the checkpoint verifies (and was trained with ``settings``, if given), else the reason."""
    try:
        meta = verify(name, restore=restore)
    except CheckpointError as exc:
        return str(exc)
    if settings is not None and meta["settings"] != _jsonable(settings, "settings"):
        path = checkpoint_path(name)
        diff = _settings_diff(meta["settings"], _jsonable(settings, "settings"))
        cmd = restore or meta.get("restore") or RESTORE_COMMANDS.get(path.stem) or "its training entry point"
        return f"checkpoint {path} was trained with other settings ({diff}); retrain it with `{cmd}`"
    return "ok"


def _settings_diff(saved: Mapping, wanted: Mapping) -> str:
    keys = sorted(set(saved) | set(wanted))
    parts = [f"{k}: saved {saved.get(k, '<absent>')!r}, expected {wanted.get(k, '<absent>')!r}"
             for k in keys if saved.get(k, object()) != wanted.get(k, object())]
    return "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")


def load_or_train(name, train_fn: Callable[[dict], tuple], *, settings: Mapping, restore: str | None = None,
                  device=None, allow_train: bool = True, header: Mapping[str, str] | None = None,
                  announce: Callable[[str], Any] | None = print) -> tuple[dict, dict]:
    """Load checkpoint ``name`` if it is present, intact and was trained with ``settings``; otherwise train it.

    Parameters
    ----------
    train_fn : callable
        ``train_fn(settings) -> (state_dict, log)`` or ``(state_dict, log, header)``; shows its own progress.
    settings : mapping
        The settings the checkpoint must have been trained with (compared after a JSON round trip).
    restore : str
        The command that recreates the checkpoint from the shell (named in errors and stored in the sidecar).
    allow_train : bool
        ``False``: raise :class:`CheckpointError` instead of training (a missing file raises
        :class:`CheckpointMissingError`).
    announce : callable or None
        Called with one line saying why training starts (default ``print``).

    Returns
    -------
    (state_dict, meta) as :func:`load` returns them; after training, what was written is read back and verified.
    """
    path = checkpoint_path(name)
    why = status(path, settings, restore=restore)
    if why == "ok":
        return load(path, device=device, restore=restore)
    if not allow_train:
        if not path.is_file():
            raise CheckpointMissingError(why)
        raise CheckpointError(why)
    if announce is not None:
        announce(f"{why.split(';')[0]}: training {path.name} now "
                 f"(the same as `{restore or RESTORE_COMMANDS.get(path.stem, 'its training entry point')}`)")
    out = train_fn(dict(_jsonable(settings, "settings")))
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError("train_fn must return (state_dict, log) or (state_dict, log, header)")
    state, log = out[0], dict(out[1] or {})
    save(path, state, settings=settings, log=log, restore=restore, header=out[2] if len(out) == 3 else header)
    return load(path, device=device, restore=restore)


def flat_log(meta: Mapping) -> dict:
    """The training log as one flat dict, as the model packages return it: ``log`` entries plus ``settings``,
    ``sha256`` and ``file``."""
    return {**meta.get("log", {}), "settings": meta["settings"], "sha256": meta["sha256"], "file": meta["file"]}


def main(argv: list[str] | None = None) -> int:
    """``python -m facelab.checkpoints [NAME ...]``: verify checkpoints (default: every one in :data:`MODELS_DIR`)
    and print each one's size, sha256 and restore command; exit status 1 if any fails."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m facelab.checkpoints", description=main.__doc__.split(":")[0])
    ap.add_argument("names", nargs="*", help="checkpoint names or paths (default: all in data/models/)")
    args = ap.parse_args(argv)
    names = args.names or sorted(p.stem for p in MODELS_DIR.glob("*.safetensors"))
    failed = 0
    for name in names:
        try:
            meta = verify(name)
            print(f"{checkpoint_path(name).name:36s} ok  {meta['size']:>10,} bytes  sha256 {meta['sha256'][:16]}...  "
                  f"restore: {meta.get('restore')}")
        except CheckpointError as exc:
            failed += 1
            print(f"{checkpoint_path(name).name:36s} FAILED: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
