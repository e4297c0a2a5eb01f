"""Read TensorFlow.js weight manifests (face-api models) with numpy: no TensorFlow needed.

A manifest (``<model>-weights_manifest.json``) is a list of groups, each with ``paths`` (binary shards, read in
order as one byte stream) and ``weights`` (name, shape, dtype, optional ``quantization``). A quantized weight is
stored as ``uint8`` (or ``uint16``) codes ``q`` and restored as ``value = q * scale + min``; an unquantized float32
weight takes 4 bytes per value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["read_tfjs_weights"]

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16, "bool": np.bool_}


def read_tfjs_weights(manifest: Path | str) -> dict[str, np.ndarray]:
    """All weights of a TF.js manifest as float32 (or int32) numpy arrays, dequantized, keyed by name.

    Raises
    ------
    ValueError
        The manifest is malformed, a shard is missing, or the shards hold more or fewer bytes than the manifest
        describes.
    """
    manifest = Path(manifest)
    try:
        groups = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read TF.js weights manifest {manifest}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for group in groups:
        blobs = []
        for p in group["paths"]:
            shard = manifest.parent / p
            if not shard.is_file():
                raise ValueError(f"TF.js weight shard {shard} (listed in {manifest.name}) is missing")
            blobs.append(shard.read_bytes())
        buf = b"".join(blobs)
        off = 0
        for w in group["weights"]:
            shape = tuple(int(s) for s in w["shape"])
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qdt = np.dtype(_DTYPES[q["dtype"]])
                raw = np.frombuffer(buf, dtype=qdt, count=n, offset=off)
                off += n * qdt.itemsize
                if "scale" in q:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                else:  # float16 quantization
                    arr = raw.astype(np.float32)
            else:
                dt = np.dtype(_DTYPES[w["dtype"]])
                arr = np.frombuffer(buf, dtype=dt, count=n, offset=off).copy()
                off += n * dt.itemsize
            if w["dtype"] == "float32":
                arr = arr.astype(np.float32)
            out[w["name"]] = arr.reshape(shape)
        if off != len(buf):
            raise ValueError(f"{manifest.name}: weights use {off} bytes but the shards hold {len(buf)}")
    return out
