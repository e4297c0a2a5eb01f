"""The asset registry: checksums, atomic idempotent fetch, clear messages, safe reading of archives."""

import hashlib
import io
import tarfile
import zipfile

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
