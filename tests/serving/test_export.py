"""The serving export: raw text + encoded image bytes in, the same answer as ingest + model."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mmpipe.config import ImageConfig, TextConfig
from mmpipe.ingest.clean.image import standardize_image
from mmpipe.ingest.clean.text import clean_text
from mmpipe.runs.record import RunDir, load_record
from mmpipe.serving.export import Standardizer, export_serving, load_serving
from mmpipe.serving.predict import predict_raw
from mmpipe.train.model import load_model
from tests.fixtures.cli import run_main

# Text that exercises every cleaning step: markup, NFKC (full-width, ligature, decomposed accents,
# Hangul jamo), invisible and control characters, odd whitespace, the length cap.
TEXTS = [
    "A <b>bright</b> sun over the hills",
    "ｆｕｌｌ　ｗｉｄｔｈ ﬁne moon",
    "cafe\u0301 e\u0301te\u0301 lantern",
    "zero\u200bwidth\x07bell\ttab\nnew line window",
    "<!-- hidden -->x<p>a</p><p>b</p>",
    "\u1100\u1161\u11a8 한 \u00a0nbsp\u2028line",
    "a < b > c",
    "",
    "sun " * 400,
]


def textured(width: int, height: int, seed: int) -> Image.Image:
    """Smooth noise: resizing and decoding differences show up, unlike on flat colours."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(2))


def mixed_files(folder):
    """Real files of every format the export decodes, in the modes and shapes ingest meets."""
    folder.mkdir()
    base = textured(300, 200, 0)
    files = []

    def save(name, image, **options):
        image.save(folder / name, **options)
        files.append(folder / name)

    sharp = np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    save("sharp.jpg", Image.fromarray(sharp), quality=95)  # high frequencies: the DCT method shows here
    save("large.jpg", base.resize((900, 600)), quality=85)  # decoded at 1/8 scale, like Pillow's draft
    save("photo.jpg", base, quality=92)
    save("gray.jpg", base.convert("L"))
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"rotated-{orientation}.jpg", base.resize((130, 77)), exif=exif)
    rgba = np.array(base.convert("RGBA"))
    rgba[..., 3] = np.random.default_rng(1).integers(0, 256, rgba.shape[:2])
    save("alpha.png", Image.fromarray(rgba))
    save("palette.png", base.convert("P"), transparency=3)
    save("tall.png", base.resize((40, 130)))
    save("tiny.png", base.resize((7, 11)))  # upscaled
    save("sixteen-bit.png", Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257))
    save("photo.webp", base, quality=90)
    save("anim.gif", base.convert("P"))
    save("bitmap.bmp", base)
    return files


@pytest.fixture(scope="module")
def parity_inputs(trained_run, tmp_path_factory):
    record = load_record(RunDir(trained_run))
    files = mixed_files(tmp_path_factory.mktemp("parity") / "files")
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(files))]
    return record, files, texts


def sharpened_export(run_dir, record, target):
    """The run's model with its blend's weights scaled up (a colder temperature), exported again: a decisive
    model, so that "top class equal" is a real check and small input differences are amplified, not hidden."""
    model = load_model(RunDir(run_dir).model)
    blend = model.get_layer("probabilities")
    [weights] = blend.get_weights()
    blend.set_weights([weights * 20])
    model.save(RunDir(target).model)
    record.save(RunDir(target))
    export_serving(model, target, record.classes, record.run_config.text, record.run_config.image)
    return target


@pytest.mark.parametrize("model_kind", ["as-trained", "sharpened"])
def test_serving_matches_ingest_then_model(trained_run, parity_inputs, tmp_path, model_kind):
    record, files, texts = parity_inputs
    if model_kind == "sharpened":
        trained_run = sharpened_export(trained_run, record, tmp_path)
    image_config, text_config = record.run_config.image, record.run_config.text
    # The ingest path: Python cleaning and Pillow standardization, then the saved Keras model.
    cleaned = [clean_text(text, lowercase=text_config.lowercase, max_chars=text_config.max_chars).text
               for text in texts]
    pixels = np.stack([np.frombuffer(standardize_image(path, image_config).pixels, np.uint8)
                       .reshape(image_config.size, image_config.size, 3) for path in files])
    model = load_model(RunDir(trained_run).model)  # what the run serves: its heads' blend, calibrated
    import tensorflow as tf

    expected = model.predict({"text": tf.constant(cleaned), "image": pixels}, verbose=0)
    # The serving path: raw strings and file bytes into the SavedModel.
    serving = load_serving(trained_run)
    raw_images = [path.read_bytes() for path in files]
    seen = serving.standardize(text=tf.constant(texts), image=tf.constant(raw_images))
    assert [value.decode() for value in seen["text"].numpy()] == cleaned
    pixel_gap = np.abs(seen["image"].numpy().astype(int) - pixels.astype(int))
    assert pixel_gap.max() <= 1, f"pixels differ by {pixel_gap.max()} (rounding differences are at most 1)"
    served = predict_raw(serving, texts, raw_images)
    gap = np.abs(served["probabilities"] - expected).max()
    assert gap <= 1e-3, f"probabilities differ by up to {gap}"
    if model_kind == "sharpened":  # far from uniform (0.25), so the gap above is not small by construction
        assert expected.max(axis=1).min() > 0.35
    classes = np.array(record.classes)
    assert list(served["label"].astype(str)) == list(classes[expected.argmax(axis=1)])
    assert served["classes"].shape == expected.shape


def test_standardizer_text_matches_clean_text_with_lowercase_and_a_short_cap():
    config = TextConfig(lowercase=True, max_chars=12)
    standardizer = Standardizer(config, ImageConfig(size=8))
    import tensorflow as tf

    got = [value.decode() for value in standardizer.text(tf.constant(TEXTS)).numpy()]
    assert got == [clean_text(text, lowercase=True, max_chars=12).text for text in TEXTS]


def test_standardizer_crop_fit_matches_ingest(tmp_path):
    config = ImageConfig(size=12, fit="crop", background=(0, 0, 0))
    standardizer = Standardizer(TextConfig(), config)
    import tensorflow as tf

    for path in mixed_files(tmp_path / "files"):
        expected = np.frombuffer(standardize_image(path, config).pixels, np.uint8).reshape(12, 12, 3)
        got = standardizer.image(tf.constant([path.read_bytes()])).numpy()[0]
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, path.name


def test_predict_cli_prints_one_json_object(trained_run, parity_inputs, monkeypatch, capsys):
    _, files, _ = parity_inputs
    code, out, err = run_main(["predict", trained_run.name, "--runs", str(trained_run.parent), "--text", "a sun",
                               "--image", str(files[0]), "--json"], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["run_id"] == trained_run.name and result["label"] in result["probabilities"]
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4


@pytest.mark.parametrize("case", ["missing-image", "tiff", "unknown-run", "truncated", "transparent-gif", "fifo",
                                  "char-device", "folder"])
def test_predict_refuses_unusable_input_in_one_line(trained_run, tmp_path, monkeypatch, capsys, case):
    tiff, png, gif = tmp_path / "image.tif", tmp_path / "image.png", tmp_path / "image.gif"
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would wait forever
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "folder.png").mkdir()
    textured(20, 20, 3).save(tiff)
    textured(40, 40, 4).save(png)
    png.write_bytes(png.read_bytes()[:200])
    noise = np.random.default_rng(5).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).convert("P").save(gif, transparency=0)  # palette index 0 is transparent
    image = {"tiff": tiff, "truncated": png, "transparent-gif": gif, "fifo": tmp_path / "pipe.jpg",
             "char-device": tmp_path / "zero.jpg", "folder": tmp_path / "folder.png"}.get(case, tiff)
    args = {"missing-image": [trained_run.name, "--text", "a sun"],
            "unknown-run": ["20000101T000000Z-abcdef", "--text", "a sun", "--image", str(tiff)]}.get(
        case, [trained_run.name, "--text", "a sun", "--image", str(image)])
    code, out, err = run_main(["predict", *args, "--runs", str(trained_run.parent)], monkeypatch, capsys)
    message = {"missing-image": "--text and --image", "tiff": "convert it", "unknown-run": "no run",
               "truncated": "cannot be decoded", "transparent-gif": "convert it to PNG", "fifo": "not a regular file",
               "char-device": "not a regular file", "folder": "not a regular file"}[case]
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_predict_files_scores_one_raw_pair_like_the_export(trained_run, parity_inputs):
    from mmpipe.serving.predict import predict_files

    record, files, texts = parity_inputs
    result = predict_files(trained_run, texts[0], files[0])
    assert set(result) == {"run_id", "variant", "label", "probabilities"} and result["run_id"] == trained_run.name
    assert list(result["probabilities"]) == record.classes
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
    # Bytes that are not UTF-8 (`--text $'\\xff\\xfe'`: surrogates in argv) are scored as U+FFFD, as ingest reads them.
    undecodable, replaced = "a \udcff\udcfe sun", "a \ufffd\ufffd sun"
    assert predict_files(trained_run, undecodable, files[0]) == predict_files(trained_run, replaced, files[0])


@pytest.mark.parametrize("damaged", ["saved_model.pb", "variables/variables.index",
                                     "variables/variables.data-00000-of-00001"])
def test_a_damaged_export_is_one_line_naming_it(trained_run, tmp_path, monkeypatch, capsys, damaged):
    from tests.fixtures.cli import run_main
    from tests.fixtures.files import gradient

    gradient(20, 12).save(tmp_path / "a.png")
    run = shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    with open(run / "serving" / damaged, "r+b") as handle:
        handle.truncate(max(1, handle.seek(0, 2) // 3))  # what a full disk or a half copy leaves
    code, out, err = run_main(["predict", trained_run.name, "--runs", str(tmp_path / "runs"), "--text", "a sun",
                               "--image", str(tmp_path / "a.png")], monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"the serving export of run {trained_run.name} at {run / 'serving'} is damaged" in err

