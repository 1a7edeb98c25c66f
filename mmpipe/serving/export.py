"""The serving export: a SavedModel that takes raw UTF-8 text and encoded image bytes.

RUNS/<run_id>/serving/ holds the trained model wrapped with the ingest's cleaning rewritten as
TensorFlow ops (mmpipe.ingest.clean.text and mmpipe.ingest.clean.image are the reference), so a caller sends
what it has (a string, the bytes of a JPEG/PNG/WebP/GIF/BMP file) and gets class probabilities
and class names, with no Python, Pillow or mmpipe on the serving side. Endpoints:

* `serve(text, image)` -> {"probabilities": [B, C], "label": [B], "classes": [B, C]}
* `standardize(text, image)` -> {"text": [B], "image": [B, S, S, 3] uint8}: what the model sees.

(The text variant takes only `text`, the image variant only `image`.)

How close the two paths are, and where they differ (tests/test_serving.py measures it):
* Text is identical for valid UTF-8. Core TensorFlow has no Unicode normalization, so NFKC is
  rebuilt from Python's own tables at export time: a per-code-point NFKC map plus the canonical
  composition pairs (Hangul included), applied pass by pass. Left out: canonical *reordering*
  of several combining marks, which only matters for marks typed out of canonical order.
  Invalid UTF-8 becomes U+FFFD (ingest quarantines such rows as `text_invalid`).
* Images: the same decode scale for JPEGs as Pillow's `draft`, EXIF orientation from the
  file's Orientation tag, alpha over the background, the same antialiased bilinear filter and
  the same pad/crop geometry. Pixels can differ by a rounding step where Pillow uses fixed-point
  arithmetic and rounds between its two resize passes; 16-bit images keep the high byte
  instead of Pillow's rounding. TIFF is not decodable by TensorFlow, and its GIF decoder drops
  transparency (ingest composites it over the background; `mmpipe predict` refuses such GIFs).
"""

from __future__ import annotations

import functools
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import tensorflow as tf

from mmpipe.config import ImageConfig, TextConfig
from mmpipe.errors import MmpipeError
from mmpipe.ingest.clean.text import _MARKUP, _MAX_PASSES, _RAW_FACTOR

SERVING_DIR = "serving"
SERVING_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_UNICODE_END = 0x110000
_EXIF_SCAN_BYTES = 65536  # the Orientation tag sits in the first IFD, near the start of the file


class ServingError(MmpipeError):
    """The serving export is missing, or an input cannot be served."""


def export_serving(model, run_dir: Path, classes: list[str], text: TextConfig, image: ImageConfig) -> Path:
    """Write RUN_DIR/serving/ atomically (a reader sees the old export or the whole new one)."""
    import keras
    standardizer = Standardizer(text, image)
    names = sorted(model.input) if isinstance(model.input, dict) else [model.input.name]
    class_names = tf.constant(classes)

    def standardize(**raw):
        return {name: getattr(standardizer, name)(raw[name]) for name in names}

    def serve(**raw):
        probabilities = model(standardize(**raw), training=False)
        batch = tf.shape(probabilities)[0]
        return {"probabilities": probabilities, "label": tf.gather(class_names, tf.argmax(probabilities, axis=-1)),
                "classes": tf.tile(class_names[None, :], [batch, 1])}

    signature = {name: tf.TensorSpec([None], tf.string, name=name) for name in names}
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(standardizer)
    archive.add_endpoint("serve", _keyword_function(serve, names), input_signature=[signature[n] for n in names])
    archive.add_endpoint("standardize", _keyword_function(standardize, names),
                         input_signature=[signature[n] for n in names])
    final = run_dir / SERVING_DIR
    temp, old = run_dir / f".{SERVING_DIR}.tmp", run_dir / f".{SERVING_DIR}.old"
    for leftover in (temp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    archive.write_out(str(temp), verbose=False)
    if final.exists():
        final.rename(old)  # a reader sees the old export or the new one, never a half-deleted one
    temp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _keyword_function(fn, names: list[str]):
    """`fn(**inputs)` as a function whose parameters are `names`: signature inputs are named after them."""
    if names == ["image", "text"]:
        def endpoint(image, text):
            return fn(image=image, text=text)
    elif names == ["text"]:
        def endpoint(text):
            return fn(text=text)
    else:
        def endpoint(image):
            return fn(image=image)
    return endpoint


def load_serving(run_dir: Path):
    """The loaded SavedModel of a run; ServingError if the run has none."""
    path = Path(run_dir) / SERVING_DIR
    if not (path / "saved_model.pb").is_file():
        raise ServingError(f"run {Path(run_dir).name} has no serving export at {path}: it was trained with "
                           "train.export_serving = false, before exports existed, or did not finish; train a new run")
    return tf.saved_model.load(str(path))


def predict_raw(serving, texts: list[str] | None, images: list[bytes] | None) -> dict[str, Any]:
    """Call the `serve` endpoint on raw inputs; numpy results."""
    inputs = {}
    if texts is not None:
        inputs["text"] = tf.constant(texts, dtype=tf.string)
    if images is not None:
        inputs["image"] = tf.constant(images, dtype=tf.string)
    return {key: value.numpy() for key, value in serving.serve(**inputs).items()}


def predict_files(run_dir: Path, text: str | None, image: Path | None) -> dict[str, Any]:
    """Score one (text, image file) pair with a run's serving export: {"run_id", "label", "probabilities"}.

    The inputs the run's variant needs must be given; the image is checked like ingest checks it
    (file size, format, pixel count) before the graph sees it, so bad files give a clear error.
    """
    from mmpipe.runs.store import load_run

    run_dir = Path(run_dir)
    record = load_run(run_dir.parent, run_dir.name)
    variant = record["variant"]
    needed = {"fused": ("text", "image"), "text": ("text",), "image": ("image",)}[variant]
    missing = [name for name in needed if {"text": text, "image": image}[name] is None]
    if missing:
        flags = " and ".join(f"--{name}" for name in needed)
        raise ServingError(f"run {run_dir.name} is a {variant} model: give {flags}")
    serving = load_serving(run_dir)
    texts = [text] if "text" in needed else None
    images = [_read_image(image, ImageConfig(**record["config"]["image"]))] if "image" in needed else None
    try:
        result = predict_raw(serving, texts, images)
    except tf.errors.InvalidArgumentError as error:
        raise ServingError(f"the serving export could not read the input: {error.message.splitlines()[0]}") from None
    classes = [name.decode() for name in result["classes"][0]]
    probabilities = {name: round(float(p), 6) for name, p in zip(classes, result["probabilities"][0], strict=True)}
    return {"run_id": run_dir.name, "variant": variant, "label": result["label"][0].decode(),
            "probabilities": probabilities}


def _read_image(path: Path, config: ImageConfig) -> bytes:
    from PIL import Image

    try:
        size = path.stat().st_size
        if size > config.max_file_bytes:
            raise ServingError(f"{path} is {size:,} bytes, over image.max_file_bytes = {config.max_file_bytes:,}")
        data = path.read_bytes()
    except OSError as error:
        raise ServingError(f"cannot read {path}: {error.strerror or error}") from None
    if image_format(data) is None:
        raise ServingError(f"{path} is not a {', '.join(SERVING_FORMATS)} file (TIFF is not decodable by the "
                           "serving export): convert it, e.g. to PNG")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > config.max_pixels:
                raise ServingError(f"{path} is {width}x{height} pixels, over image.max_pixels = {config.max_pixels:,}")
            if image.format == "GIF" and "transparency" in image.info:
                raise ServingError(f"{path} is a GIF with transparency, which TensorFlow's GIF decoder drops "
                                   "(ingest composites it over the background): convert it to PNG")
            image.load()  # a truncated or corrupt file fails here, with a clear message, not in the graph
    except ServingError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure on untrusted bytes is the file's fault
        raise ServingError(f"{path} cannot be decoded: {error}") from None
    return data


def image_format(data: bytes) -> str | None:
    """The format of encoded image bytes from their magic number, if the export can decode it."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"GIF8",):
        return "GIF"
    if data[:2] == b"BM":
        return "BMP"
    return None


class Standardizer(tf.Module):
    """Ingest's text cleaning and image standardization as TensorFlow ops (tables tracked for export)."""

    def __init__(self, text: TextConfig, image: ImageConfig):
        super().__init__(name="mmpipe_standardizer")
        self.text_config, self.image_config = text, image
        nfkc, pairs = _nfkc_tables()
        self.nfkc_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(nfkc), tf.int64), tf.constant(list(nfkc.values()))),
            default_value="")
        self.compose_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(pairs), tf.int64),
                                                tf.constant(list(pairs.values()), tf.int64)),
            default_value=-1)
        self.drop_pattern = "[" + _char_class(_dropped_code_points()) + "]"
        self.space_pattern = "[" + _char_class(_space_code_points()) + "]+"

    # ---- text -------------------------------------------------------------------------------
    def text(self, texts):
        """mmpipe.ingest.clean.text.clean_text on a batch of raw strings."""
        max_chars = self.text_config.max_chars
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
        texts = tf.strings.substr(texts, 0, _RAW_FACTOR * max_chars + 64, unit="UTF8_CHAR")
        cleaned = self._settle(texts)
        too_long = tf.strings.length(cleaned, unit="UTF8_CHAR") > max_chars
        recut = self._settle(tf.strings.substr(cleaned, 0, max_chars, unit="UTF8_CHAR"))
        return tf.where(too_long, recut, cleaned)

    def _settle(self, texts):
        def step(i, current, _changed):
            cleaned = self._normalize_once(current)
            return i + 1, cleaned, tf.reduce_any(cleaned != current)

        _, texts, _ = tf.while_loop(lambda i, _t, changed: tf.logical_and(i < 2 * _MAX_PASSES, changed), step,
                                    (tf.constant(0), texts, tf.constant(True)))
        return texts

    def _normalize_once(self, texts):
        texts = self._compose(self._map_nfkc(texts))
        texts = tf.strings.regex_replace(texts, self.drop_pattern, "")
        texts = tf.strings.regex_replace(texts, "(?s)" + _MARKUP.pattern, " ")
        texts = tf.strings.regex_replace(texts, self.space_pattern, " ")
        texts = tf.strings.regex_replace(texts, "^ | $", "")
        return tf.strings.lower(texts, encoding="utf-8") if self.text_config.lowercase else texts

    def _map_nfkc(self, texts):
        chars = tf.strings.unicode_split(texts, "UTF-8")
        points = tf.cast(tf.strings.unicode_decode(texts, "UTF-8"), tf.int64)
        mapped = tf.ragged.map_flat_values(self.nfkc_table.lookup, points)
        merged = tf.ragged.map_flat_values(lambda m, c: tf.where(m == "", c, m), mapped, chars)
        return tf.strings.reduce_join(merged, axis=-1)

    def _compose(self, texts):
        """One pass of canonical composition of adjacent pairs (repeated passes chain them)."""
        points = tf.cast(tf.strings.unicode_decode(texts, "UTF-8"), tf.int64)
        flat, rows = points.flat_values, points.value_rowids()
        same_row = rows[1:] == rows[:-1]
        composed = self.compose_table.lookup(flat[:-1] * _UNICODE_END + flat[1:])
        joins = tf.logical_and(same_row, composed >= 0)
        # Where pairs overlap (a b c with ab and bc composable) the left one wins.
        joins = tf.logical_and(joins, tf.logical_not(tf.concat([[False], joins], 0)[:-1]))
        length = tf.size(flat)  # one more than `joins`, except for an all-empty batch
        starts = tf.concat([joins, [False]], 0)[:length]
        dropped = tf.concat([[False], joins], 0)[:length]
        values = tf.where(starts, tf.concat([composed, [0]], 0)[:length], flat)
        keep = tf.logical_not(dropped)
        result = tf.RaggedTensor.from_value_rowids(tf.boolean_mask(values, keep), tf.boolean_mask(rows, keep),
                                                   nrows=points.nrows())
        return tf.strings.unicode_encode(tf.cast(result, tf.int32), "UTF-8")

    # ---- images -----------------------------------------------------------------------------
    def image(self, images):
        """mmpipe.ingest.clean.image.standardize_image on a batch of encoded images: [B, S, S, 3] uint8."""
        size = self.image_config.size
        return tf.map_fn(self._one_image, images, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))

    def _one_image(self, data):
        pixels = tf.cond(tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff",
                         lambda: self._decode_jpeg(data), lambda: self._decode_other(data))
        pixels = _exif_transpose(pixels, _exif_orientation(data))
        return self._fit(pixels)

    def _decode_jpeg(self, data):
        """Decode at 1/8, 1/4 or 1/2 scale exactly where Pillow's `draft` does."""
        shape = tf.image.extract_jpeg_shape(data)
        scale = tf.minimum(shape[1] // self.image_config.size, shape[0] // self.image_config.size)
        branch = tf.cast(scale >= 2, tf.int32) + tf.cast(scale >= 4, tf.int32) + tf.cast(scale >= 8, tf.int32)
        return tf.switch_case(branch, [lambda r=ratio: tf.io.decode_jpeg(
            data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE")  # libjpeg's default, as in Pillow
                                       for ratio in (1, 2, 4, 8)])

    def _decode_other(self, data):
        """PNG, WebP, GIF, BMP: alpha composited over the background like ingest's `to_rgb`."""
        native = tf.io.decode_image(data, expand_animations=False)  # GIF: the first frame, like Pillow
        opaque = tf.fill(tf.concat([tf.shape(native)[:2], [1]], 0), tf.constant(255, tf.uint8))
        rgba = tf.switch_case(tf.shape(native)[2] - 1, [
            lambda: tf.concat([native, native, native, opaque], -1),  # gray
            lambda: tf.concat([native[..., :1]] * 3 + [native[..., 1:]], -1),  # gray + alpha
            lambda: tf.concat([native, opaque], -1),
            lambda: native,
        ])
        rgba = tf.cast(rgba, tf.float32)
        alpha = rgba[..., 3:] / 255.0
        background = tf.constant(self.image_config.background, tf.float32)
        blended = rgba[..., :3] * alpha + background * (1.0 - alpha)
        return tf.cast(tf.clip_by_value(tf.round(blended), 0, 255), tf.uint8)

    def _fit(self, pixels):
        """ImageOps.pad (letterbox) or ImageOps.fit (center crop) to S x S, antialiased bilinear."""
        size = self.image_config.size
        height, width = tf.shape(pixels)[0], tf.shape(pixels)[1]
        h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
        if self.image_config.fit == "crop":
            side = tf.minimum(h, w)
            left, top = (w - side) * 0.5, (h - side) * 0.5
            scale = tf.stack([size / side, size / side])
            return _resample(pixels, [size, size], scale, tf.stack([-top * scale[0], -left * scale[1]]))
        new_h = tf.where(width > height, tf.round(h / w * size), float(size))
        new_w = tf.where(height > width, tf.round(w / h * size), float(size))
        new_h, new_w = tf.maximum(new_h, 1.0), tf.maximum(new_w, 1.0)
        resized = _resample(pixels, tf.cast(tf.stack([new_h, new_w]), tf.int32), tf.stack([new_h / h, new_w / w]),
                            tf.zeros([2], tf.float64))
        top = tf.cast(tf.round((size - new_h) * 0.5), tf.int32)
        left = tf.cast(tf.round((size - new_w) * 0.5), tf.int32)
        rows, cols = tf.shape(resized)[0], tf.shape(resized)[1]
        padded = tf.pad(tf.cast(resized, tf.int32) + 1, [[top, size - rows - top], [left, size - cols - left], [0, 0]])
        background = tf.constant(self.image_config.background, tf.int32)
        return tf.cast(tf.where(padded == 0, background, padded - 1), tf.uint8)


def _resample(pixels, out_size, scale, translation):
    """Pillow's antialiased bilinear (a triangle filter widened when shrinking), rounded to uint8."""
    out = tf.raw_ops.ScaleAndTranslate(images=tf.cast(pixels, tf.float32)[None], size=out_size,
                                       scale=tf.cast(scale, tf.float32), translation=tf.cast(translation, tf.float32),
                                       kernel_type="triangle", antialias=True)[0]
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _exif_orientation(data):
    """The EXIF Orientation value (1..8) found in the file's first bytes; 1 when there is none."""
    head = tf.io.decode_raw(tf.strings.substr(data, 0, _EXIF_SCAN_BYTES) + b"\0" * 12, tf.uint8)
    frames = tf.cast(tf.signal.frame(head, 10, 1), tf.int32)
    big = tf.reduce_all(frames[:, :8] == [0x01, 0x12, 0, 3, 0, 0, 0, 1], axis=1)
    little = tf.reduce_all(frames[:, :8] == [0x12, 0x01, 3, 0, 1, 0, 0, 0], axis=1)
    values = tf.where(big, frames[:, 8] * 256 + frames[:, 9], frames[:, 8] + frames[:, 9] * 256)
    found = tf.where(tf.logical_or(big, little))[:, 0]
    value = tf.cond(tf.size(found) > 0, lambda: tf.gather(values, found[0]), lambda: tf.constant(1))
    return tf.where(tf.logical_and(value >= 1, value <= 8), value, 1)


def _exif_transpose(pixels, orientation):
    """ImageOps.exif_transpose: the eight EXIF orientations as flips and rotations."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    return tf.switch_case(orientation - 1, [
        lambda: pixels,
        lambda: pixels[:, ::-1],
        lambda: pixels[::-1, ::-1],
        lambda: pixels[::-1],
        lambda: transpose(pixels),
        lambda: tf.image.rot90(pixels, k=3),
        lambda: transpose(pixels)[::-1, ::-1],
        lambda: tf.image.rot90(pixels, k=1),
    ])


# ---- tables built from Python's unicodedata, so serving and ingest share one Unicode version ----
def _is_char(code: int) -> bool:
    return not 0xD800 <= code <= 0xDFFF  # surrogates cannot occur in UTF-8 strings


@functools.cache  # ~1 s of walking every code point; the same for every export in a process
def _nfkc_tables() -> tuple[dict[int, str], dict[int, int]]:
    """(code point -> its NFKC string where that differs, (first, second) pair key -> composed)."""
    nfkc, pairs = {}, {}
    for code in range(_UNICODE_END):
        if not _is_char(code):
            continue
        char = chr(code)
        normal = unicodedata.normalize("NFKC", char)
        if normal != char:
            nfkc[code] = normal
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            parts = [int(part, 16) for part in decomposition.split()]
            if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) == char:
                pairs[parts[0] * _UNICODE_END + parts[1]] = code
    for lead in range(19):  # Hangul syllables compose algorithmically: L + V, then LV + T
        for vowel in range(21):
            syllable = 0xAC00 + (lead * 21 + vowel) * 28
            pairs[(0x1100 + lead) * _UNICODE_END + 0x1161 + vowel] = syllable
            for trail in range(1, 28):
                pairs[syllable * _UNICODE_END + 0x11A7 + trail] = syllable + trail
    return nfkc, pairs


@functools.cache
def _dropped_code_points() -> tuple[int, ...]:
    """What mmpipe.ingest.clean.text._keep drops: control characters other than whitespace, format characters."""
    dropped = []
    for code in range(_UNICODE_END):
        if _is_char(code):
            category = unicodedata.category(chr(code))
            if category == "Cf" or (category == "Cc" and not chr(code).isspace()):
                dropped.append(code)
    return tuple(dropped)


@functools.cache
def _space_code_points() -> tuple[int, ...]:
    """What str.isspace() (and so Python's \\s and str.strip) treats as whitespace."""
    return tuple(code for code in range(_UNICODE_END) if _is_char(code) and chr(code).isspace())


def _char_class(codes: tuple[int, ...]) -> str:
    """An RE2 character class body for `codes` (sorted), as ranges of \\x{...} escapes."""
    parts, start = [], None
    for index, code in enumerate(codes):
        if start is None:
            start = code
        if index + 1 == len(codes) or codes[index + 1] != code + 1:
            parts.append(f"\\x{{{start:x}}}" if start == code else f"\\x{{{start:x}}}-\\x{{{code:x}}}")
            start = None
    return "".join(parts)
