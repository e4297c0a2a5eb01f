"""The asset registry: checksums, atomic idempotent fetch, clear messages, safe reading of archives."""

import hashlib
import io
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from facelab import assets


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A registry and cache of our own, so the tests never touch data/."""
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "assets")
    monkeypatch.setattr(assets, "DOWNLOAD_DIR", tmp_path / "downloads")
    reg = tmp_path / "assets.toml"
    monkeypatch.setattr(assets, "REGISTRY_FILE", reg)
    return tmp_path, reg


def write_registry(reg, name, source, package, member, data, **extra):
    fields = "".join(f'{k} = "{v}"\n' for k, v in extra.items())
    reg.write_text(f'[assets.{name}]\nsource = "{source}"\npackage = "{package}"\nversion = "1.0"\n{fields}'
                   f'files = [ {{ member = "{member}", sha256 = "{hashlib.sha256(data).hexdigest()}", '
                   f'size = {len(data)} }} ]\n')


def test_registry_of_the_repository_is_valid():
    reg = assets.load_registry()
    assert {"requirejs", "widgets-html-manager", "mathjax"} <= set(reg)
    for a in reg.values():
        assert a.license, f"{a.name} has no license"
        assert all(len(f.sha256) == 64 and f.size > 0 for f in a.files), a.name


def test_npm_archive_member_is_fetched_verified_and_idempotent(sandbox):
    tmp, reg = sandbox
    payload = b"console.log('hello');\n"
    (tmp / "downloads").mkdir()
    with tarfile.open(tmp / "downloads" / "demo-pkg-1.0.tgz", "w:gz") as tf:
        info = tarfile.TarInfo("package/dist/demo.js")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    write_registry(reg, "demo", "npm", "demo-pkg", "package/dist/demo.js", payload, license="MIT")
    p = assets.fetch("demo")
    assert p.read_bytes() == payload and p.name == "demo.js"
    mtime = p.stat().st_mtime_ns
    assert assets.fetch("demo") == p and p.stat().st_mtime_ns == mtime  # second fetch does nothing
    assets.verify("demo")
    assert not list(p.parent.glob(".*part"))


def test_checksum_mismatch_writes_nothing(sandbox):
    tmp, reg = sandbox
    (tmp / "downloads").mkdir()
    with zipfile.ZipFile(tmp / "downloads" / "demo_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo_pkg/model.bin", b"tampered")
    write_registry(reg, "demo", "pypi", "demo-pkg", "demo_pkg/model.bin", b"original", license="MIT")
    with pytest.raises(assets.AssetError, match="sha256"):
        assets.fetch("demo")
    assert not (tmp / "assets" / "demo" / "model.bin").exists()


def test_missing_asset_names_the_fetch_command(sandbox):
    _, reg = sandbox
    write_registry(reg, "demo", "npm", "demo-pkg", "package/x.js", b"x", license="MIT")
    with pytest.raises(assets.AssetMissingError, match=r"python -m facelab.assets fetch demo"):
        assets.path("demo")


def test_unknown_asset_lists_known_ones(sandbox):
    _, reg = sandbox
    write_registry(reg, "demo", "npm", "demo-pkg", "package/x.js", b"x", license="MIT")
    with pytest.raises(assets.AssetError, match="known assets: demo"):
        assets.get("nope")


def test_installed_source_reports_missing_package(sandbox):
    _, reg = sandbox
    write_registry(reg, "demo", "installed", "not-a-real-pkg", "m.bin", b"x", module="not_a_real_module_xyz",
                   license="MIT")
    with pytest.raises(assets.AssetMissingError, match="pip install 'not-a-real-pkg==1.0'"):
        assets.fetch("demo")


def test_malformed_registry_entry_is_a_clear_error(sandbox):
    _, reg = sandbox
    reg.write_text('[assets.bad]\nsource = "ftp"\npackage = "x"\nversion = "1"\nfiles = [ { member = "a", sha256 = "0", size = 1 } ]\n')
    with pytest.raises(assets.AssetError, match="unknown source 'ftp'"):
        assets.registry()
    reg.write_text('[assets.bad]\nsource = "npm"\n')
    with pytest.raises(assets.AssetError, match="malformed"):
        assets.registry()


def test_archive_members_cannot_escape_the_asset_folder(sandbox, tmp_path):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    with pytest.raises(assets.AssetError, match="escapes"):
        assets._read_member(folder, "../secret.txt")


# ------------------------------------------------------------------------------------------------ issue #25 items 2, 3
def test_a_corrupted_fetched_file_is_refused_and_make_assets_restores_it(sandbox):
    tmp, reg = sandbox
    payload = b"console.log('hello');\n" * 10
    (tmp / "downloads").mkdir()
    with tarfile.open(tmp / "downloads" / "demo-pkg-1.0.tgz", "w:gz") as tf:
        info = tarfile.TarInfo("package/demo.js")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    write_registry(reg, "demo", "npm", "demo-pkg", "package/demo.js", payload, license="MIT")
    p = assets.fetch("demo")
    assert assets.path("demo") == p
    p.write_bytes(payload.replace(b"hello", b"HELLO"))            # same size, other bytes
    with pytest.raises(assets.AssetCorruptError, match=r"demo.js is corrupt: sha256.*make assets"):
        assets.path("demo")
    assets.fetch("demo")                                          # what `make assets` runs: fetched again
    assert assets.path("demo").read_bytes() == payload


def _flip_bytes(p):
    b = bytearray(p.read_bytes())
    mid = len(b) // 2
    b[mid:mid + 64] = bytes(x ^ 0xFF for x in b[mid:mid + 64])
    p.write_bytes(bytes(b))


def _flip_one_bit(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0x40
    p.write_bytes(bytes(b))


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p):
    p.write_bytes(b"")


def _corrupt_header(p):
    b = bytearray(p.read_bytes())
    b[0:32] = bytes(x ^ 0x55 for x in b[0:32])
    p.write_bytes(bytes(b))


ASSET_FAULTS = {"flip 64 bytes": _flip_bytes, "flip 1 bit": _flip_one_bit, "truncate": _truncate, "empty": _empty,
                "header": _corrupt_header}
REAL_DIR = assets.ASSET_DIR


def _mirror(asset, folder):
    """Symlinks to the real fetched files of ``asset`` in ``folder/<name>/``; returns the first file's path."""
    (folder / asset.name).mkdir(parents=True)
    for f in asset.files:
        real = REAL_DIR / asset.name / f.filename
        if not real.is_file():
            pytest.skip(f"asset {asset.name} not fetched (run `make assets`)")
        (folder / asset.name / f.filename).symlink_to(real)
    return folder / asset.name / asset.files[0].filename


@pytest.mark.parametrize("name", sorted(assets.load_registry()))
def test_every_fault_in_a_copy_of_each_asset_is_a_clear_error(name, tmp_path, monkeypatch):
    asset = assets.get(name)
    n = 0
    for fault, corrupt in ASSET_FAULTS.items():
        folder = tmp_path / fault.replace(" ", "_")
        target = _mirror(asset, folder)
        real = target.resolve()
        target.unlink()
        shutil.copyfile(real, target)                 # a private copy: the real asset is never touched
        corrupt(target)
        monkeypatch.setattr(assets, "ASSET_DIR", folder)
        with pytest.raises(assets.AssetCorruptError) as err:
            assets.path(name)
        assert str(target) in str(err.value) and "make assets" in str(err.value), (fault, str(err.value))
        n += 1
    folder = tmp_path / "missing"
    target = _mirror(asset, folder)
    target.unlink()
    monkeypatch.setattr(assets, "ASSET_DIR", folder)
    with pytest.raises(assets.AssetMissingError, match=r"does not exist.*make assets"):
        assets.path(name)
    assert n == len(ASSET_FAULTS)
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "flip_64_bytes")
    with pytest.raises(assets.AssetCorruptError):   # verify() re-hashes without the cache
        assets.verify(name)


def _model_loaders():
    from facelab import detect
    from facelab.models import load_embedder, load_expression_model

    out = {"dlib-resnet-model": lambda: load_embedder("dlib-resnet", cache=False),
           "faceapi-recognition": lambda: load_embedder("dlib-resnet", cache=False, weights="faceapi"),
           "sface-model": lambda: load_embedder("sface", cache=False),
           "faceapi-expression": lambda: load_expression_model(cache=False)}
    for asset, fn, args in (("dlib-shape-predictor-68", "_shape_predictor", (68,)),
                            ("dlib-shape-predictor-5", "_shape_predictor", (5,)),
                            ("dlib-mmod-detector", "_dlib_cnn", ()), ("yunet-model", "_yunet_model_path", ())):
        f = getattr(getattr(detect, fn, None), "__wrapped__", None)   # bypass the per-process model cache
        if f is not None:
            out[asset] = lambda f=f, args=args: f(*args)
    return out


def test_model_loaders_refuse_a_corrupt_asset(tmp_path, monkeypatch):
    reg = assets.registry()
    loaders = _model_loaders()
    assert {"dlib-resnet-model", "sface-model", "faceapi-expression"} <= set(loaders)
    for name, load in loaders.items():
        folder = tmp_path / name
        for a in reg.values():   # every other asset as it is, this one with flipped bytes
            if (REAL_DIR / a.name).is_dir():
                (folder / a.name).parent.mkdir(parents=True, exist_ok=True)
                (folder / a.name).symlink_to(REAL_DIR / a.name)
        (folder / name).unlink()
        target = _mirror(reg[name], folder)
        real = target.resolve()
        target.unlink()
        shutil.copyfile(real, target)
        _flip_bytes(target)
        monkeypatch.setattr(assets, "ASSET_DIR", folder)
        with pytest.raises(assets.AssetCorruptError, match=re.escape(str(target)) + r".*make assets"):
            load()


def test_run_time_loaders_never_download(tmp_path, monkeypatch):
    """With no asset fetched, every loader raises AssetMissingError naming `make assets`; nothing runs pip or npm."""
    import subprocess

    def no_subprocess(*a, **k):
        raise AssertionError(f"run-time code started a process: {a[:1]}")

    for fn in ("run", "call", "check_call", "check_output", "Popen"):
        monkeypatch.setattr(subprocess, fn, no_subprocess)
    monkeypatch.setattr(assets.shutil, "which", lambda *a, **k: (_ for _ in ()).throw(AssertionError("which npm")))
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "empty")
    monkeypatch.setattr(assets, "DOWNLOAD_DIR", tmp_path / "downloads")
    for name in assets.registry():
        with pytest.raises(assets.AssetMissingError, match="make assets"):
            assets.path(name)
    from facelab import photos

    for name, load in {**_model_loaders(), "photos": photos.real_photos}.items():
        with pytest.raises(assets.AssetMissingError, match=r"make assets"):
            load()
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "empty").exists()


def test_no_run_time_module_calls_fetch():
    """Downloads belong to set-up: only facelab.assets itself (its CLI, run by `make assets`) calls fetch."""
    src = Path(assets.__file__).parent
    offenders = [f"{p.relative_to(src)}:{i}" for p in src.rglob("*.py") if p.name != "assets.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"assets\.fetch(_all)?\(", line)]
    assert not offenders, f"run-time code calls assets.fetch (use assets.path): {offenders}"


_OFFLINE_LOADS = """
import socket
tried = []
def _refuse(self, addr, *a):
    tried.append(addr)
    raise OSError("network disabled in this test")
socket.socket.connect = _refuse
from facelab.models import load_embedder, load_expression_model
from facelab.models.synthetic import load_synth_facenet
from facelab.antispoof.pretrain import pretrained_clip
from facelab.diffusion import quick_model
load_embedder("dlib-resnet"); load_embedder("sface"); load_expression_model()
load_synth_facenet("synth-plain")
pretrained_clip(allow_train=False)
quick_model(allow_train=False).encode_prompt(["a face of a person"])
print("connections tried:", len(tried))
"""


def test_models_load_in_a_network_namespace_without_network():
    """Issue #25: the real models and the trained checkpoints (with the MiniLM text tower) load with no network
    (``unshare -n``) and try no connection."""
    import os
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("unshare -n is not available here")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "FACELAB_THREADS": "1"}
    res = subprocess.run(["unshare", "-n", sys.executable, "-c", _OFFLINE_LOADS], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "connections tried: 0" in res.stdout, res.stdout
