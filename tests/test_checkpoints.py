"""facelab.checkpoints and facelab.files: round trip, atomic writes, fault injection on copies of every committed
checkpoint, load_or_train (retrain / refuse), and guards on how the package writes files (issues #14, #25)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from facelab import checkpoints, files
from facelab.checkpoints import CheckpointError, CheckpointMissingError

SRC = Path(__file__).resolve().parents[1] / "src" / "facelab"


# ------------------------------------------------------------------------------------------------ round trip
def _state():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(3, 4, generator=g), "b": torch.arange(5, dtype=torch.int64),
            "h": torch.randn(2, generator=g).to(torch.float16), "flag": torch.tensor([True, False])}


def test_round_trip_keeps_tensors_settings_log_and_header(tmp_path):
    state = _state()
    side = checkpoints.save(tmp_path / "tiny", state, settings={"seed": 0, "lr": 1e-3, "dims": (3, 4)},
                            log={"loss": [1.0, 0.5]}, restore="python -m tiny.train", header={"arch": "mlp"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.safetensors"]   # no temporaries left
    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert on_disk == side
    assert side["format"] == "facelab-checkpoint" and side["format_version"] == checkpoints.FORMAT_VERSION
    assert side["size"] == (tmp_path / "tiny.safetensors").stat().st_size and len(side["sha256"]) == 64
    assert side["settings"] == {"seed": 0, "lr": 1e-3, "dims": [3, 4]} and side["restore"] == "python -m tiny.train"
    back, meta = checkpoints.load(tmp_path / "tiny.safetensors")
    assert back.keys() == state.keys()
    assert all(back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]) for k in state)
    assert meta["header"] == {"arch": "mlp"} and meta["log"] == {"loss": [1.0, 0.5]}
    assert checkpoints.flat_log(meta) == {"loss": [1.0, 0.5], "settings": side["settings"], "sha256": side["sha256"],
                                          "file": "tiny.safetensors"}
    assert checkpoints.status(tmp_path / "tiny", {"seed": 0, "lr": 1e-3, "dims": [3, 4]}) == "ok"
    assert "dims: saved [3, 4], expected [3, 5]" in checkpoints.status(tmp_path / "tiny",
                                                                        {"seed": 0, "lr": 1e-3, "dims": [3, 5]})


def test_names_resolve_to_the_models_folder_and_bad_input_is_clear(tmp_path):
    assert checkpoints.checkpoint_path("antispoof_clip") == checkpoints.MODELS_DIR / "antispoof_clip.safetensors"
    assert checkpoints.sidecar_path(tmp_path / "a.safetensors") == tmp_path / "a.json"
    assert checkpoints.checkpoint_path(str(tmp_path / "a")) == tmp_path / "a.safetensors"
    with pytest.raises(TypeError, match="not a tensor"):
        checkpoints.save(tmp_path / "x", {"w": [1, 2]}, settings={})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        checkpoints.save(tmp_path / "x", {"w": torch.zeros(1)}, settings={"f": object()})
    with pytest.raises(TypeError, match="header values must be strings"):
        checkpoints.save(tmp_path / "x", {"w": torch.zeros(1)}, settings={}, header={"n": 3})
    assert not list(tmp_path.iterdir())   # nothing written by a refused save


def test_load_moves_tensors_to_the_device(tmp_path):
    checkpoints.save(tmp_path / "d", {"w": torch.ones(2)}, settings={})
    state, _ = checkpoints.load(tmp_path / "d", device=torch.device("cpu"))
    assert state["w"].device.type == "cpu"


# ------------------------------------------------------------------------------------------------ atomic writes
def test_atomic_path_keeps_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "data.json"
    files.atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b'{"v": 2, "trunc')       # half written ...
            raise RuntimeError("killed")             # ... and the process dies
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]   # the temporary is gone
    with pytest.raises(TypeError):
        files.atomic_write_json(target, {"v": object()})   # fails before the file is touched
    assert json.loads(target.read_text()) == {"v": 1}
    files.atomic_write_text(tmp_path / "sub" / "t.txt", "ok")   # creates the folder
    assert (tmp_path / "sub" / "t.txt").read_text() == "ok"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777   # not mkstemp's private 0600
    target.chmod(0o640)
    files.atomic_write_json(target, {"v": 3})
    assert target.stat().st_mode & 0o777 == 0o640                            # a rewrite keeps the mode


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    checkpoints.save(tmp_path / "m", {"w": torch.zeros(4)}, settings={"v": 1}, log={"v": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def dying_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\": {\"dty")   # half a header
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save_file)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path / "m", {"w": torch.ones(4)}, settings={"v": 2}, log={"v": 2})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    state, meta = checkpoints.load(tmp_path / "m")
    assert torch.equal(state["w"], torch.zeros(4)) and meta["settings"] == {"v": 1}


def test_a_kill_between_tensors_and_sidecar_is_detected_not_loaded(tmp_path, monkeypatch):
    checkpoints.save(tmp_path / "m", {"w": torch.zeros(4)}, settings={"v": 1})

    def dying_json(*a, **k):
        raise KeyboardInterrupt("killed before the sidecar")

    monkeypatch.setattr(checkpoints, "atomic_write_json", dying_json)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path / "m", {"w": torch.ones(4)}, settings={"v": 2})
    monkeypatch.undo()
    # new tensors, old sidecar: the hash no longer matches, so it is an error, never a silent load
    with pytest.raises(CheckpointError, match=r"m.safetensors is corrupt: sha256"):
        checkpoints.load(tmp_path / "m")


# ------------------------------------------------------------------------------------------------ sha256 cache
def test_sha256_is_cached_per_file_version(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    digest = files.sha256_file(p)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

    def no_read(*a, **k):
        raise AssertionError("re-read a cached file")

    monkeypatch.setattr(files, "open", no_read, raising=False)
    assert files.sha256_file(p) == digest          # from the cache: no read
    monkeypatch.undo()
    files.atomic_write_bytes(p, b"abd")            # a rewrite (new inode) is hashed again
    monkeypatch.setattr(files, "open", no_read, raising=False)
    with pytest.raises(AssertionError, match="re-read"):
        files.sha256_file(p)
    monkeypatch.undo()
    assert files.sha256_file(p) != digest


# ------------------------------------------------------------------------------------------------ fault injection
def _flip_bytes(p: Path):      # 64 bytes inverted in the middle of the tensor data: same size
    b = bytearray(p.read_bytes())
    mid = len(b) // 2
    b[mid:mid + 64] = bytes(x ^ 0xFF for x in b[mid:mid + 64])
    p.write_bytes(bytes(b))


def _flip_one_bit(p: Path):    # one exponent bit, as in the probe that turned -0.034 into -1.1e37
    b = bytearray(p.read_bytes())
    b[len(b) * 3 // 4] ^= 0x40
    p.write_bytes(bytes(b))


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path):
    p.write_bytes(b"")


def _corrupt_header(p: Path):  # garbage inside the JSON header of the safetensors file
    b = bytearray(p.read_bytes())
    b[10:40] = b"#" * 30
    p.write_bytes(bytes(b))


def _corrupt_header_length(p: Path):
    b = bytearray(p.read_bytes())
    b[0:8] = (2 ** 40).to_bytes(8, "little")
    p.write_bytes(bytes(b))


FAULTS = {"flip 64 bytes": _flip_bytes, "flip 1 bit": _flip_one_bit, "truncate": _truncate, "empty": _empty,
          "header": _corrupt_header, "header length": _corrupt_header_length}


class _Text:
    dim = 384

    def __call__(self, prompts):
        return torch.zeros(len(prompts), 1, 384)


def _loaders():
    """name -> function(path) that loads the checkpoint at ``path`` through its model package, training never."""
    from facelab.antispoof.pretrain import load_pretrained_clip
    from facelab.diffusion.model import QUICK_CHECKPOINT, QUICK_VAE_CHECKPOINT, load_quick_model
    from facelab.models.synthetic import load_synth_facenet
    from facelab.privacy.makeup import load_makeup_classifier

    return {
        "antispoof_clip": lambda p: load_pretrained_clip(p, train_if_missing=False),
        "makeup_classifier": lambda p: load_makeup_classifier(p, train_if_missing=False),
        "synth_facenets": lambda p: load_synth_facenet("synth-residual", p),
        # the latent quick model is two files: each is loaded with the committed (intact) other one
        "face_vae_quick": lambda p: load_quick_model(QUICK_CHECKPOINT, vae_path=p, text_encoder=_Text()),
        "face_ldm_quick": lambda p: load_quick_model(p, vae_path=QUICK_VAE_CHECKPOINT, text_encoder=_Text()),
    }


COMMITTED = ["antispoof_clip", "makeup_classifier", "synth_facenets", "face_vae_quick", "face_ldm_quick"]


def _copy(name: str, folder: Path) -> Path:
    src = checkpoints.checkpoint_path(name)
    if not src.is_file():
        pytest.skip(f"{src.name} is not in this checkout")
    if name in ("face_vae_quick", "face_ldm_quick"):      # loaded as a pair: the other file must be there too
        for other in ("face_vae_quick", "face_ldm_quick"):
            if not checkpoints.checkpoint_path(other).is_file():
                pytest.skip(f"{other}.safetensors is not in this checkout")
    shutil.copy(src, folder / src.name)
    shutil.copy(src.with_suffix(".json"), folder / src.with_suffix(".json").name)
    return folder / src.name


@pytest.mark.parametrize("name", COMMITTED)
def test_every_fault_in_a_copy_of_each_committed_checkpoint_is_a_clear_error(name, tmp_path):
    load = _loaders()[name]
    restore = checkpoints.RESTORE_COMMANDS[name]
    n_faults = 0   # (the intact files load: test_chapter_functions_load_without_training, test_antispoof, ...)
    for fault, corrupt in FAULTS.items():
        folder = tmp_path / fault.replace(" ", "_")
        folder.mkdir()
        p = _copy(name, folder)
        corrupt(p)
        for loader in (load, checkpoints.load):
            with pytest.raises(CheckpointError) as err:
                loader(p)
            msg = str(err.value)
            assert str(p) in msg and restore in msg, (fault, msg)
            assert not isinstance(err.value, CheckpointMissingError)
            n_faults += 1
    # the sidecar itself: missing, not JSON, not a sidecar
    for fault, spoil in {"no sidecar": lambda s: s.unlink(), "sidecar not JSON": lambda s: s.write_text("{\"sha2"),
                         "sidecar of another format": lambda s: s.write_text("{\"sha256\": \"00\"}")}.items():
        folder = tmp_path / fault.replace(" ", "_")
        folder.mkdir()
        p = _copy(name, folder)
        spoil(p.with_suffix(".json"))
        with pytest.raises(CheckpointError, match=re.escape(restore)) as err:
            load(p)
        assert p.name in str(err.value)
        n_faults += 1
    assert n_faults == 2 * len(FAULTS) + 3
    with pytest.raises(CheckpointMissingError, match=re.escape(restore)):   # and a FileNotFoundError
        load(tmp_path / "nowhere" / f"{name}.safetensors")


def test_a_file_that_matches_its_sidecar_but_is_not_safetensors_is_a_clear_error(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{abc}")
    files.atomic_write_json(p.with_suffix(".json"), {
        "format": "facelab-checkpoint", "format_version": 1, "file": p.name, "size": p.stat().st_size,
        "sha256": files.sha256_file(p), "settings": {}, "restore": "python -m junk"})
    with pytest.raises(CheckpointError, match=r"junk.safetensors cannot be read.*python -m junk"):
        checkpoints.load(p)


# ------------------------------------------------------------------------------------------------ load_or_train
class _Trainer:
    def __init__(self):
        self.calls = []

    def __call__(self, settings):
        self.calls.append(settings)
        return {"w": torch.full((3,), float(settings["value"]))}, {"loss": 0.1 * len(self.calls)}


def test_load_or_train_trains_once_then_loads(tmp_path):
    train = _Trainer()
    said = []
    state, meta = checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, restore="python -m t",
                                            announce=said.append)
    assert len(train.calls) == 1 and torch.equal(state["w"], torch.full((3,), 2.0))
    assert "is missing" in said[0] and "python -m t" in said[0]
    state, meta = checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, restore="python -m t")
    assert len(train.calls) == 1 and meta["log"] == {"loss": 0.1}


@pytest.mark.parametrize("fault", ["flip 64 bytes", "truncate", "empty", "header"])
def test_load_or_train_retrains_a_corrupt_file(fault, tmp_path):
    train = _Trainer()
    checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, restore="python -m t", announce=None)
    FAULTS[fault](tmp_path / "t.safetensors")
    said = []
    state, meta = checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, restore="python -m t",
                                            announce=said.append)
    assert len(train.calls) == 2 and torch.equal(state["w"], torch.full((3,), 2.0))
    assert "t.safetensors" in said[0] and checkpoints.status(tmp_path / "t", {"value": 2}) == "ok"


def test_load_or_train_retrains_when_the_settings_differ(tmp_path):
    train = _Trainer()
    checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, announce=None)
    state, meta = checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 5}, announce=None)
    assert len(train.calls) == 2 and meta["settings"] == {"value": 5} and float(state["w"][0]) == 5.0


def test_load_or_train_refuses_when_training_is_not_allowed(tmp_path):
    train = _Trainer()
    with pytest.raises(CheckpointMissingError, match=r"t.safetensors is missing.*python -m t"):
        checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, restore="python -m t",
                                  allow_train=False)
    checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, restore="python -m t", announce=None)
    _flip_bytes(tmp_path / "t.safetensors")
    with pytest.raises(CheckpointError, match=r"t.safetensors is corrupt.*python -m t"):
        checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 2}, allow_train=False)
    with pytest.raises(CheckpointError, match=r"other settings|corrupt"):
        checkpoints.load_or_train(tmp_path / "t", train, settings={"value": 3}, allow_train=False)
    assert len(train.calls) == 1
    with pytest.raises(TypeError, match="train_fn must return"):
        checkpoints.load_or_train(tmp_path / "u", lambda s: None, settings={}, announce=None)


# ------------------------------------------------------------------------------------------------ committed files
def test_committed_checkpoints_are_verified_and_up_to_date():
    """Each committed checkpoint verifies and was trained with the settings its package expects, so no chapter
    retrains by accident."""
    from facelab.antispoof.pretrain import PRETRAIN_SETTINGS
    from facelab.diffusion.model import QUICK_BASE_SETTINGS, QUICK_SETTINGS, QUICK_VAE_SETTINGS
    from facelab.models.synthetic import SYNTH_SETTINGS
    from facelab.privacy.makeup import makeup_settings

    from facelab.affect.bank import settings_for
    from facelab.prompting.aus import SETTINGS as AU_SETTINGS
    from facelab.studies.test_time_adaptation import SOURCE_SETTINGS
    from facelab.synth.appearance import SETTINGS as APPEARANCE_SETTINGS

    expected = {"antispoof_clip": PRETRAIN_SETTINGS, "makeup_classifier": makeup_settings(),
                "synth_facenets": SYNTH_SETTINGS, "face_vae_quick": QUICK_VAE_SETTINGS,
                "face_ldm_quick": QUICK_SETTINGS, "face_ldm_quick_base": QUICK_BASE_SETTINGS,
                "prompting_au_regressor": AU_SETTINGS, "tta_source_fer": SOURCE_SETTINGS,
                "synth_appearance": APPEARANCE_SETTINGS, "affect_descriptors_quick": settings_for("quick")}
    for name, settings in expected.items():
        if not checkpoints.checkpoint_path(name).is_file():
            continue
        assert checkpoints.status(name, settings) == "ok", name
        side = checkpoints.read_sidecar(name)
        assert side["file"] == f"{name}.safetensors"
        assert side["restore"] == checkpoints.RESTORE_COMMANDS.get(name, side["restore"]), name
    # The others (DSFDA's settings depend on the profile; chapter 10's prompt scores are keyed by prompt hash) are
    # checked against their packages by tests/test_study_neutral_video_adaptation.py and
    # tests/test_study_emotion_prompting.py. Every committed checkpoint verifies, stays small and names the
    # `python -m facelab...` command that recreates it.
    committed = sorted(p.stem for p in checkpoints.MODELS_DIR.glob("*.safetensors"))
    assert set(expected) <= set(committed)
    for name in committed:
        checkpoints.verify(name)
        side = checkpoints.read_sidecar(name)
        assert side["restore"].startswith("python -m facelab."), name
        # 5 MB each; the diffusion autoencoder 8 MB (3.8 M parameters in float16: its 8-channel latent keeps makeup)
        limit = 8 * 2**20 if name == "face_vae_quick" else 5 * 2**20
        assert checkpoints.checkpoint_path(name).stat().st_size < limit, name


def test_chapter_functions_load_without_training():
    from facelab.privacy.makeup import makeup_classifier
    from facelab.synth.recognisers import synth_facenet

    if not all(checkpoints.checkpoint_path(n).is_file() for n in COMMITTED):
        pytest.skip("committed checkpoints missing")
    # (the CLIP: test_antispoof.py::test_the_cached_chapter_clip_loads; the diffusion model: test_diffusion.py)
    net, log = makeup_classifier(allow_train=False)
    assert set(log["held-out accuracy"]) == set(net.classes)
    assert synth_facenet("synth-plain", allow_train=False).threshold == pytest.approx(0.7257, abs=1e-4)


# ------------------------------------------------------------------------------------------------ guards
def test_package_writes_json_and_safetensors_only_atomically():
    """Issue #25 item 7: every JSON or safetensors write in the package goes through facelab.files/checkpoints."""
    pattern = re.compile(r"json\.dump\(|\.write_text\(\s*json\.dumps|save_file\(|\.to_json\(")
    offenders = []
    for p in SRC.rglob("*.py"):
        if p.name in ("files.py", "checkpoints.py"):
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pattern.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{p.relative_to(SRC)}:{i}: {line.strip()}")
    assert not offenders, "non-atomic JSON/safetensors writes (use facelab.files / facelab.checkpoints):\n" + \
        "\n".join(offenders)


@pytest.mark.parametrize("spoil, match", [
    (lambda d: d.update(format_version="1"), "no valid format_version"),
    (lambda d: d.update(format_version=99), "newer than this facelab"),
    (lambda d: d.pop("size"), r"missing \['size'\]"),
])
def test_sidecar_version_and_fields_are_checked(spoil, match, tmp_path):
    checkpoints.save(tmp_path / "s", {"w": torch.zeros(1)}, settings={}, restore="python -m s")
    side = json.loads((tmp_path / "s.json").read_text())
    spoil(side)
    (tmp_path / "s.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=match):
        checkpoints.load(tmp_path / "s")


def test_synthetic_recognisers_train_save_and_retrain_a_corrupt_file(tmp_path):
    from facelab.models.synthetic import load_synth_facenet
    from facelab.synth.recognisers import render_training_data, train_synth_facenets

    tiny = {"n_identities": 3, "per_identity": 2, "steps": 2, "seed": 0}
    path = tmp_path / "nets.safetensors"
    log = train_synth_facenets(path, **tiny)
    assert set(log["models"]) == {"synth-plain", "synth-residual"} and "FaceWorld" in log["data"]
    net = load_synth_facenet("synth-residual", path, settings=tiny)
    assert net.threshold == pytest.approx(log["models"]["synth-residual"]["threshold_far_1pct"])
    _flip_bytes(path)
    with pytest.raises(CheckpointError, match=r"nets.safetensors is corrupt.*python -m facelab.synth.recognisers"):
        load_synth_facenet("synth-plain", path, settings=tiny)          # no training data: refused
    again = load_synth_facenet("synth-plain", path, settings=tiny, training_data=render_training_data)
    assert checkpoints.status(path, tiny) == "ok" and again.embedding_size == 64


def test_command_line_verification(tmp_path, capsys):
    checkpoints.save(tmp_path / "good", {"w": torch.zeros(2)}, settings={}, restore="python -m good")
    checkpoints.save(tmp_path / "bad", {"w": torch.zeros(2)}, settings={}, restore="python -m bad")
    _flip_one_bit(tmp_path / "bad.safetensors")
    assert checkpoints.main([str(tmp_path / "good.safetensors")]) == 0
    assert checkpoints.main([str(tmp_path / "good.safetensors"), str(tmp_path / "bad.safetensors")]) == 1
    out = capsys.readouterr().out
    assert "good.safetensors" in out and "bad.safetensors" in out and "FAILED" in out and "python -m bad" in out
