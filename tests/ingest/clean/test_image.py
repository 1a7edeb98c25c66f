import builtins
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmpipe.config import ImageConfig
from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.clean.image import StandardImage, resolve_image_path, standardize_image, to_rgb
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.reasons import Reason
from tests.fixtures.files import bad_file_corpus, gradient, save

SIZE = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    return root.resolve(), bad_file_corpus(root, outside)


def judge(root: Path, reference: str, config: ImageConfig = ImageConfig(size=SIZE)):
    path = resolve_image_path(reference, root, root)
    return path if isinstance(path, Rejection) else standardize_image(path, config)


@pytest.mark.parametrize(
    "name",
    ["truncated", "empty", "html_as_png", "bomb", "cmyk", "sixteen_bit", "animated", "exif_rotated",
     "symlink_out", "dotdot", "absolute_out", "missing"],
)
def test_bad_file_corpus_outcomes(corpus, name):
    root, cases = corpus
    reference, expected = cases[name]
    outcome = judge(root, reference)
    if expected is None:
        assert isinstance(outcome, StandardImage), outcome
        assert len(outcome.pixels) == SIZE * SIZE * 3
        assert len(outcome.sha256) == 64
    else:
        assert isinstance(outcome, Rejection)
        assert outcome.reason is expected, outcome.detail
        assert outcome.detail


def test_bomb_is_refused_without_decoding(corpus, monkeypatch):
    """Only the header is read: any attempt to decode the 40000 x 40000 pixels would fail this test."""
    from PIL import ImageFile

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    root, cases = corpus
    outcome = judge(root, cases["bomb"][0])
    assert outcome.reason is Reason.IMAGE_TOO_LARGE and "pixels" in outcome.detail


def test_max_pixels_from_config(tmp_path):
    save(gradient(40, 40), tmp_path / "a.png", "PNG")
    outcome = judge(tmp_path.resolve(), "a.png", ImageConfig(size=SIZE, max_pixels=1000))
    assert outcome.reason is Reason.IMAGE_TOO_LARGE
    assert "1,600 pixels" in outcome.detail


def test_max_file_bytes_checked_before_reading(tmp_path):
    save(gradient(40, 40), tmp_path / "a.png", "PNG")
    outcome = judge(tmp_path.resolve(), "a.png", ImageConfig(size=SIZE, max_file_bytes=100))
    assert outcome.reason is Reason.IMAGE_TOO_LARGE
    assert "max_file_bytes" in outcome.detail


def test_an_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    """Its size is known from a stat: a huge file must cost no read at all, not even max_file_bytes of one."""
    root = tmp_path.resolve()
    big = root / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(64 * 2**20)  # sparse: 64 MiB that take no disk
    config = ImageConfig(size=SIZE, max_file_bytes=1024)
    opened, real_open = [], io.open

    def noting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and os.path.realpath(file) == str(big):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    _, images = next(SourceLocation(base_dir=root, root=root).windows([], config))  # how ingest reads files
    with monkeypatch.context() as patched:
        patched.setattr(builtins, "open", noting_open)
        patched.setattr(io, "open", noting_open)
        outcomes = [judge(root, "big.png", config), images.read("big.png")]
    assert opened == []
    for outcome in outcomes:
        assert outcome.reason is Reason.IMAGE_TOO_LARGE and "67,108,864 bytes" in outcome.detail


def test_a_file_that_grows_after_its_size_is_read_is_read_whole_or_refused(tmp_path, monkeypatch):
    """Read as far as the stat's size, then on as far as the limit: a file that grew is never cut short."""
    from mmpipe.ingest.clean import image as module

    root = tmp_path.resolve()
    save(gradient(40, 40), root / "a.png", "PNG")
    size = (root / "a.png").stat().st_size
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda path, **kwargs: os.stat_result(
        (0, 0, 0, 0, 0, 0, 10, 0, 0, 0)) if path.name == "a.png" else real_stat(path, **kwargs))  # "10 bytes"
    assert module.read_image_file(root / "a.png", ImageConfig(size=SIZE)) == (root / "a.png").read_bytes()
    refused = module.read_image_file(root / "a.png", ImageConfig(size=SIZE, max_file_bytes=size - 1))
    assert refused.reason is Reason.IMAGE_TOO_LARGE and "over image.max_file_bytes" in refused.detail


def test_exif_orientation_is_applied(corpus):
    root, cases = corpus
    outcome = judge(root, cases["exif_rotated"][0], ImageConfig(size=SIZE, fit="crop"))
    pixels = np.frombuffer(outcome.pixels, np.uint8).reshape(SIZE, SIZE, 3).astype(int)
    # Displayed upright, red grows left to right and green top to bottom, as in gradient().
    assert pixels[8, -1, 0] - pixels[8, 0, 0] > 100
    assert pixels[-1, 8, 1] - pixels[0, 8, 1] > 100
    assert (outcome.width, outcome.height) == (16, 24)  # as stored in the file


def test_sixteen_bit_png_is_scaled_not_clipped(corpus):
    root, cases = corpus
    outcome = judge(root, cases["sixteen_bit"][0], ImageConfig(size=SIZE, fit="crop"))
    pixels = np.frombuffer(outcome.pixels, np.uint8)
    assert pixels.min() < 60 and 0 < pixels.mean() < 250  # clipping would make it nearly all white


def test_animated_gif_takes_first_frame(corpus):
    root, cases = corpus
    outcome = judge(root, cases["animated"][0])
    pixels = np.frombuffer(outcome.pixels, np.uint8).reshape(SIZE, SIZE, 3)
    assert tuple(pixels[8, 8]) == (255, 0, 0)


@pytest.mark.parametrize(("cmyk", "rgb"), [((0, 255, 255, 0), (255, 0, 0)), ((255, 0, 255, 0), (0, 255, 0)),
                                           ((0, 0, 0, 255), (0, 0, 0)), ((0, 0, 0, 0), (255, 255, 255))])
def test_cmyk_is_converted_to_the_right_colour(tmp_path, cmyk, rgb):
    save(Image.new("CMYK", (20, 20), cmyk), tmp_path / "c.jpg", "JPEG", quality=100)
    outcome = judge(tmp_path.resolve(), "c.jpg")
    assert outcome.format == "JPEG"
    pixels = np.frombuffer(outcome.pixels, np.uint8).reshape(SIZE, SIZE, 3)
    assert np.abs(pixels.astype(int) - rgb).max() <= 3, pixels[SIZE // 2, SIZE // 2]


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "LA", "PA", "I", "I;16", "F", "CMYK", "YCbCr", "RGBa"])
def test_every_mode_converts_to_rgb(mode):
    source = gradient(8, 8)
    image = source.convert("P") if mode == "PA" else source
    converted = to_rgb(image.convert(mode), (0, 0, 0))
    assert converted.mode == "RGB" and converted.size == (8, 8)


def test_alpha_is_composited_over_background():
    transparent = Image.new("RGBA", (4, 4), (200, 10, 10, 0))
    assert to_rgb(transparent, (1, 2, 3)).getpixel((0, 0)) == (1, 2, 3)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette, (9, 9, 9)).getpixel((0, 0)) == (9, 9, 9)


def test_pad_letterboxes_with_background_and_crop_fills(tmp_path):
    save(Image.new("RGB", (32, 8), (0, 0, 255)), tmp_path / "wide.png", "PNG")
    root = tmp_path.resolve()
    padded = judge(root, "wide.png", ImageConfig(size=SIZE, fit="pad", background=(255, 0, 0)))
    cropped = judge(root, "wide.png", ImageConfig(size=SIZE, fit="crop"))
    padded_pixels = np.frombuffer(padded.pixels, np.uint8).reshape(SIZE, SIZE, 3)
    cropped_pixels = np.frombuffer(cropped.pixels, np.uint8).reshape(SIZE, SIZE, 3)
    assert tuple(padded_pixels[0, 8]) == (255, 0, 0)  # letterbox band
    assert tuple(padded_pixels[8, 8]) == (0, 0, 255)
    assert (cropped_pixels == (0, 0, 255)).all()


def test_standardizing_is_deterministic(corpus):
    root, cases = corpus
    first = judge(root, cases["exif_rotated"][0])
    assert judge(root, cases["exif_rotated"][0]) == first


def test_path_inside_root_via_dotdot_is_allowed(tmp_path):
    save(gradient(), tmp_path / "a" / "x.png", "PNG")
    (tmp_path / "b").mkdir()
    assert isinstance(judge(tmp_path.resolve(), "b/../a/x.png"), StandardImage)


def test_empty_reference_and_folder_reference(tmp_path):
    (tmp_path / "folder").mkdir()
    assert judge(tmp_path.resolve(), "").reason is Reason.IMAGE_MISSING
    assert judge(tmp_path.resolve(), "folder").reason is Reason.IMAGE_UNREADABLE


def test_unsupported_format_is_unreadable(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.ico", "ICO")
    outcome = judge(tmp_path.resolve(), "a.ico")
    assert outcome.reason is Reason.IMAGE_UNREADABLE
    assert "supported format" in outcome.detail


@pytest.mark.parametrize("reference", ["a\x00.png", "x" * 5000 + ".png"], ids=["nul-byte", "name-too-long"])
def test_unusable_paths_are_rejected_not_raised(tmp_path, reference):
    outcome = judge(tmp_path.resolve(), reference)
    assert isinstance(outcome, Rejection) and outcome.reason is Reason.IMAGE_MISSING


def test_a_file_that_vanishes_after_resolving_is_unreadable(tmp_path):
    path = save(gradient(), tmp_path / "a.png", "PNG")
    resolved = resolve_image_path("a.png", tmp_path.resolve(), tmp_path.resolve())
    path.unlink()
    assert standardize_image(resolved, ImageConfig(size=SIZE)).reason is Reason.IMAGE_UNREADABLE


def test_brightness_and_colourfulness_are_the_means_over_the_pixels():
    from mmpipe.ingest.clean.image import image_statistics

    assert image_statistics(bytes([255, 0, 0, 10, 10, 10])) == (47.5, 127.5)  # (255 + 30) / 6, (255 + 0) / 2
    pixels = np.random.default_rng(3).integers(0, 256, (64 * 64, 3), dtype=np.uint8)
    spread = pixels.max(axis=1).astype(float) - pixels.min(axis=1)
    assert image_statistics(pixels.tobytes()) == (round(pixels.mean(), 4), round(spread.mean(), 4))
