"""facelab.io.load_image: every common image kind to (H, W, 3) uint8 RGB, clear errors for bad files."""

import numpy as np
import pytest
from PIL import Image

from facelab import assets
from facelab.io import ImageLoadError, load_image, to_rgb_uint8


def _pattern(h=24, w=32):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 77)], -1).astype(np.uint8)


def test_rgb_png_roundtrip(tmp_path):
    rgb = _pattern()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, rgb)
    assert out.flags["C_CONTIGUOUS"]


def test_grey_becomes_three_equal_channels(tmp_path):
    g = _pattern()[:, :, 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = load_image(str(tmp_path / "g.png"))
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png")
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])
    black = load_image(tmp_path / "t.png", background=0)
    np.testing.assert_array_equal(black[3, 3], [0, 0, 0])


def test_palette_image(tmp_path):
    rgb = _pattern()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 20


def test_16bit_grey_png_is_scaled(tmp_path):
    g16 = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)  # up to 65195
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    assert out.shape == (24, 32, 3)
    expected = ((g16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1
    assert out.max() > 250  # really scaled, not clipped to 255 from the low byte


def test_16bit_rgb_array_and_float_array():
    a16 = (_pattern().astype(np.uint16) * 257)
    np.testing.assert_array_equal(to_rgb_uint8(a16), _pattern())
    np.testing.assert_array_equal(load_image(_pattern() / 255.0), _pattern())


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = [255, 0, 0]  # left half red, right half blue
    rgb[:, 20:] = [0, 0, 255]
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)  # upright: portrait
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 60  # the red half is now on top
    assert out[-3, 10, 2] > 200 and out[-3, 10, 0] < 60


def test_missing_file():
    with pytest.raises(ImageLoadError, match="not found"):
        load_image("/nonexistent/face.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(tmp_path / "e.jpg")


def test_not_an_image(tmp_path):
    (tmp_path / "x.jpg").write_text("this is a text file, not a JPEG\n" * 10)
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)
    assert issubclass(ImageLoadError, ValueError)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated_image(tmp_path, fmt):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / f"full.{fmt}")
    data = (tmp_path / f"full.{fmt}").read_bytes()
    (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated|corrupt"):
        load_image(tmp_path / f"cut.{fmt}")


def test_bad_array_shapes():
    with pytest.raises(ImageLoadError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageLoadError, match="zero size"):
        to_rgb_uint8(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="expected a path"):
        load_image(12345)


def test_real_32bit_png_and_jpeg():
    folder = assets.fetch("face-recognition-test-images")
    rgba = load_image(folder / "32bit.png")  # a 32-bit RGBA PNG
    jpg = load_image(folder / "obama2.jpg")
    assert rgba.dtype == np.uint8 and rgba.ndim == 3 and rgba.shape[2] == 3
    assert jpg.shape[2] == 3 and min(jpg.shape[:2]) > 100
