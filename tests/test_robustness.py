"""Issue #25 items 5 and 6, and the killed-chapter fault: bad input is a clear error (or defined handling), never a
silently wrong result, an unbounded allocation or a third-party traceback.

Cheap checks: nothing here renders more than a handful of faces or loads a model asset.
"""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from facelab import REPO_ROOT
from facelab.io import BatchTooLargeError, ImageLoadError, check_batch_bytes, load_image, max_batch_bytes, \
    max_image_pixels, to_rgb_uint8


def _rgb(h=24, w=32):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 77)], -1).astype(np.uint8)


# ------------------------------------------------------------------------------------------ item 6: float images
def test_float_image_in_0_255_is_refused_with_the_fix():
    with pytest.raises(ImageLoadError, match="divide it by 255"):
        load_image(_rgb().astype(np.float32))
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        to_rgb_uint8(np.full((4, 4, 3), -0.5))


def test_uint8_and_float_in_0_1_still_load():
    rgb = _rgb()
    np.testing.assert_array_equal(load_image(rgb), rgb)
    np.testing.assert_array_equal(load_image(rgb / 255.0), rgb)
    over = rgb / 255.0 * 1.01  # resampling overshoot of up to 0.02 is clipped (documented)
    assert load_image(over).max() == 255


def test_detector_refuses_float_0_255_before_detecting():
    from facelab.detect import detect_faces

    with pytest.raises(ImageLoadError, match="divide it by 255"):
        detect_faces(_rgb(64, 64).astype(np.float64))


def test_aligned_chips_refuse_0_255():
    from facelab.recognition import aligned_chips

    with pytest.raises(ValueError, match="divided by 255"):
        aligned_chips(torch.full((1, 3, 32, 32), 200.0), torch.zeros(1, 68, 2))


# ------------------------------------------------------------------------------------------ item 5: big images
def test_image_above_pixel_limit_is_image_load_error(tmp_path, monkeypatch):
    Image.fromarray(_rgb(40, 50)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png").shape == (40, 50, 3)
    monkeypatch.setenv("FACELAB_MAX_IMAGE_PIXELS", "1000")
    assert max_image_pixels() == 1000
    with pytest.raises(ImageLoadError, match=r"50 x 40 pixels is larger than the limit .*big\.png"):
        load_image(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="larger than the limit"):
        load_image(_rgb(40, 50))  # an array is held to the same limit
    monkeypatch.setenv("FACELAB_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="FACELAB_MAX_IMAGE_PIXELS must be a positive number"):
        max_image_pixels()


def test_pil_decompression_bomb_is_wrapped(tmp_path, monkeypatch):
    Image.fromarray(_rgb(40, 50)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above 2x its limit, before our check
    with pytest.raises(ImageLoadError, match="decompression-bomb limit: .*bomb.png"):
        load_image(tmp_path / "bomb.png")


# ------------------------------------------------------------------------------------------ item 5: memory guard
def test_batch_bound_is_configurable(monkeypatch):
    monkeypatch.delenv("FACELAB_MAX_BATCH_BYTES", raising=False)
    assert max_batch_bytes() >= 2 * 2**30
    monkeypatch.setenv("FACELAB_MAX_BATCH_BYTES", "1e6")
    assert max_batch_bytes() == 1_000_000
    check_batch_bytes(1e6, "ok")
    with pytest.raises(BatchTooLargeError, match=r"thing would need about .* GiB.*FACELAB_MAX_BATCH_BYTES.*do this"):
        check_batch_bytes(2e6, "thing", instead="do this")
    with pytest.raises(BatchTooLargeError, match="unbounded"):
        check_batch_bytes(math.inf, "thing")
    monkeypatch.setenv("FACELAB_MAX_BATCH_BYTES", "-3")
    with pytest.raises(ValueError, match="FACELAB_MAX_BATCH_BYTES must be a positive number"):
        max_batch_bytes()


def test_huge_sample_fails_fast_and_points_to_the_stream():
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=112)
    t0 = time.perf_counter()
    with pytest.raises(BatchTooLargeError, match=r"FaceWorld.sample \(1,000,000 images of 112 px\).*"
                                                 r"SyntheticFaceStream"):
        world.sample(100000, 10)
    with pytest.raises(BatchTooLargeError, match="SyntheticFaceStream"):
        world.sample(identities=range(10), per_identity=100000)
    assert time.perf_counter() - t0 < 5.0  # refused before anything is drawn or rendered


def test_sample_bound_follows_the_setting(monkeypatch):
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=32)
    monkeypatch.setenv("FACELAB_MAX_BATCH_BYTES", str(3 * 32 * 32 * 14))
    with pytest.raises(BatchTooLargeError):
        world.sample(4)
    assert len(world.sample(2)) == 2


def test_video_duration_inf_and_huge():
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=64)
    for bad in (math.inf, math.nan, -1.0, 0, True, "5"):
        with pytest.raises(ValueError, match="duration_s must be a positive, finite number of seconds"):
            world.video(duration_s=bad)
    with pytest.raises(BatchTooLargeError, match="shorter clips"):
        world.video(duration_s=1e7)


def test_attack_set_is_bounded():
    from facelab.synth import FaceWorld
    from facelab.synth.attacks import make_attack_set

    with pytest.raises(BatchTooLargeError, match="make_attack_set .*identity_offset"):
        make_attack_set(FaceWorld(seed=0, size=224), 100000, 10)


# ------------------------------------------------------------------------------------------ item 6: ranges
@pytest.mark.parametrize("value", [(1, 2, 3), [5], ()])
def test_pose_range_must_be_a_pair(value):
    from facelab.synth import FaceWorld

    with pytest.raises(ValueError, match=r"yaw must be a number or a \(low, high\) range"):
        FaceWorld(seed=0, size=64).sample(1, yaw=value)


def test_pose_accepts_numbers_pairs_and_arrays():
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=64)
    assert world._preset("none", {"yaw": np.float64(5)})["yaw"] == (5.0, 5.0)
    assert world._preset("none", {"yaw": np.array([-3, 4])})["yaw"] == (-3, 4)
    assert world._preset("none", {"yaw": torch.tensor(2.0)})["yaw"] == (2.0, 2.0)
    assert world._preset("none", {"yaw": [-1, 1]})["yaw"] == (-1, 1)


# ------------------------------------------------------------------------------------------ item 6: gallery
def test_identify_k_must_be_a_positive_int():
    from facelab.recognition import Gallery

    g = Gallery()
    g.enroll(np.eye(3), ["a", "b", "c"])
    for bad in (2.7, 2.0, True, "2", 0, -1):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            g.identify(np.eye(3)[0], k=bad)
    assert g.identify(np.eye(3)[0], k=np.int64(2)).labels.shape == (1, 2)


def test_label_none_and_the_unknown_label_are_refused():
    from facelab.recognition import Gallery, GalleryError

    g = Gallery()
    with pytest.raises(GalleryError, match="label None .* is reserved"):
        g.enroll(np.eye(2), ["a", None])
    assert len(g) == 0  # nothing half-enrolled
    g.enroll(np.eye(2), ["a", "unknown"])  # a real label when the gallery's unknown is None
    named = Gallery(unknown="unknown", threshold=-0.5)
    with pytest.raises(GalleryError, match="'unknown' .* is reserved"):
        named.enroll(np.eye(2)[:1], "unknown")
    named.enroll(np.eye(2)[:1], "a")
    assert named.identify([[0.0, 5.0]]).predicted.tolist() == ["unknown"]


# ------------------------------------------------------------------------------------------ item 6: anti-spoofing
def test_predict_live_refuses_arrays_0_255_and_nan():
    from facelab.antispoof import CNNBaseline, predict_live

    model = CNNBaseline(image_size=32, width=4, embed_dim=8, seed=0)
    x = torch.rand(3, 3, 32, 32)
    p = predict_live(model, x)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    with pytest.raises(TypeError, match="must be a torch.Tensor .*NumPy array.*torch.from_numpy"):
        predict_live(model, x.numpy())
    with pytest.raises(ValueError, match="divided by 255"):
        predict_live(model, x * 255)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        predict_live(model, nan)
    assert predict_live(model, x[:0]).shape == (0,)


# ------------------------------------------------------------------------------------------ item 6: physiology
def _eeg_and_peripheral(n, sfreq):
    from facelab.micro import physio as ph

    rng = np.random.default_rng(0)
    return rng.standard_normal((len(ph.EEG_CHANNELS), n)) * 1e-6, \
        {ch: rng.standard_normal(n) for ch in ph.PERIPHERAL_CHANNELS}


@pytest.mark.parametrize("onset,duration", [(-0.5, 1.0), (9.5, 1.0), (20.0, 0.1)])
def test_annotations_outside_the_recording_are_refused(onset, duration):
    import mne

    from facelab.micro import physio as ph

    eeg, per = _eeg_and_peripheral(1000, 100.0)  # 10 s
    ann = mne.Annotations([1.0, onset], [0.5, duration], ["micro/happy", "macro/sad"])
    with pytest.raises(ValueError, match=r"1 of 2 annotations lie outside the recording \(0 to 10.000 s\).*macro/sad"):
        ph.make_raw(eeg, per, 100.0, annotations=ann)
    ok = ph.make_raw(eeg, per, 100.0, annotations=mne.Annotations([1.0, 9.0], [0.5, 1.0], ["a", "b"]))
    assert len(ok.annotations) == 2


@pytest.mark.parametrize("baseline", [(4.0, 1.0), (-2.0, 1.0), (8.0, 30.0), (2.0, 2.0)])
def test_peripheral_baseline_outside_or_reversed_is_refused(baseline):
    from facelab.micro import physio as ph

    n, sf = 2000, 100.0
    processed = pd.DataFrame({c: np.ones(n) for c in ("ECG_Rate", "PPG_Rate", "RSP_Rate", "EDA_Clean", "SKT")})
    processed["ECG_R_Peaks"] = 0
    processed["SCR_Peaks"] = 0
    processed["SCR_Amplitude"] = 0.0
    with pytest.raises(ValueError, match=r"baseline .* must be an interval \(start < end\) inside the recording"):
        ph.peripheral_features(processed, sf, [10.0], [baseline])


# ------------------------------------------------------------------------------------------ killed chapter run
_RUNNER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import nbformat, papermill
    from facelab import book

    def slow_execute(source, output, **kwargs):  # papermill writes its output as it goes; then the kill comes
        nbformat.write(nbformat.read(source, as_version=4), output)
        print("partial written", flush=True)
        time.sleep(120)

    papermill.execute_notebook = slow_execute
    book.execute_chapter(Path(sys.argv[1]), Path(sys.argv[2]))
""")


def _chapter(path, text):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('PROFILE = "quick"\nDEVICE = "auto"\nSEED = 0')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {text}\n\nSome text."), cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _strict_build(root, out):
    """A strict (-W) Sphinx build of ``root`` with the book's exclude patterns and notebook reader."""
    from sphinx.cmd.build import build_main

    patterns = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["exclude_patterns"]
    (root / "conf.py").write_text(f"extensions = ['myst_nb']\nexclude_patterns = {patterns + ['_build']!r}\n"
                                  "nb_execution_mode = 'off'\nproject = 'fault'\n")
    (root / "index.md").write_text("# Book\n\n```{toctree}\nchapters/00_getting_started\n```\n")
    return build_main(["-W", "-q", "-b", "html", "-d", str(out / "doctrees"), str(root), str(out / "html")])


def test_killed_chapter_run_then_strict_build_passes(tmp_path):
    """SIGKILL during a chapter run leaves its pid-tagged partial file; with the stale copy of a renamed chapter next
    to it, the runner's clean-up (what ``facelab.book html`` does first) and a strict build still pass."""
    from facelab import book

    src = tmp_path / "notebooks"
    src.mkdir()
    _chapter(src / "00_getting_started.ipynb", "Getting started")
    root = tmp_path / "book"
    chapters = root / "chapters"
    chapters.mkdir(parents=True)
    _chapter(chapters / "00_getting_started.ipynb", "Getting started (executed earlier)")
    _chapter(chapters / "07_renamed.ipynb", "Stale: its source was renamed")  # in no toctree: a strict build fails
    (chapters / ".00_getting_started.partial.ipynb").write_text("{")    # pid-less partial of an older killed run

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, str(src / "00_getting_started.ipynb"), str(chapters)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "partial written", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in chapters.iterdir())
    assert left == [f".00_getting_started.{proc.pid}.partial.ipynb", "07_renamed.ipynb"], left
    # the killed run had already removed the chapter's previous executed copy: nothing stale of 00 is built

    _chapter(chapters / "00_getting_started.ipynb", "Getting started (rerun)")  # the rerun that follows the kill
    removed = book.remove_stale_files(chapters, sources={"00_getting_started"})
    assert sorted(p.name for p in removed) == [f".00_getting_started.{proc.pid}.partial.ipynb", "07_renamed.ipynb"]
    assert _strict_build(root, tmp_path / "_build") == 0

    # hidden partial files are ignored even when nobody cleaned them (exclude pattern at any depth)
    (chapters / ".00_getting_started.999999.partial.ipynb").write_text("{")
    assert _strict_build(root, tmp_path / "_build2") == 0
    # and the check is real: a stale chapter in no toctree fails the strict build
    _chapter(chapters / "07_renamed.ipynb", "Stale")
    assert _strict_build(root, tmp_path / "_build3") != 0
