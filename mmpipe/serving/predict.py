"""Classify raw inputs with a run's serving export: `mmpipe predict` and any Python caller.

The image is checked like ingest checks it (a regular file, its size, format and pixel count)
before TensorFlow is even imported, so a bad file is a clear error at once.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from mmpipe.config import ImageConfig
from mmpipe.errors import ServingError

SERVING_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


def predict_raw(serving, texts: list[str] | None, images: list[bytes] | None) -> dict[str, Any]:
    """Call the `serve` endpoint on raw inputs; numpy results."""
    import tensorflow as tf

    inputs = {}
    if texts is not None:
        # Bytes a terminal could not decode reach Python as surrogates (argv): passed on as the bytes they were,
        # so the graph replaces invalid UTF-8 with U+FFFD as ingest's cleaning does.
        inputs["text"] = tf.constant([text.encode("utf-8", "surrogateescape") for text in texts], dtype=tf.string)
    if images is not None:
        inputs["image"] = tf.constant(images, dtype=tf.string)
    return {key: value.numpy() for key, value in serving.serve(**inputs).items()}


def predict_files(run_dir: Path, text: str | None, image: Path | None) -> dict[str, Any]:
    """Score one (text, image file) pair with a run's serving export: {"run_id", "label", "probabilities"}.

    The inputs the run's variant needs must be given; the image is checked like ingest checks it
    (file size, format, pixel count) before the graph sees it, so bad files give a clear error.
    """
    from mmpipe.runs.record import RunDir, load_record

    run_dir = Path(run_dir)
    record = load_record(RunDir(run_dir))
    variant = record.variant
    needed = {"fused": ("text", "image"), "text": ("text",), "image": ("image",)}[variant]
    missing = [name for name in needed if {"text": text, "image": image}[name] is None]
    if missing:
        flags = " and ".join(f"--{name}" for name in needed)
        raise ServingError(f"run {run_dir.name} is a {variant} model: give {flags}")
    texts = [text] if "text" in needed else None
    images = [_read_image(image, record.run_config.image)] if "image" in needed else None
    import tensorflow as tf

    from mmpipe.serving.export import load_serving

    serving = load_serving(run_dir)
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
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a device, FIFO or socket: reading it could never end
            raise ServingError(f"{path} is not a regular file; give an image file")
        if info.st_size > config.max_file_bytes:
            raise ServingError(f"{path} is {info.st_size:,} bytes, over image.max_file_bytes = "
                               f"{config.max_file_bytes:,}")
        with open(path, "rb") as handle:
            data = handle.read(config.max_file_bytes + 1)  # capped, should the file grow meanwhile
    except OSError as error:
        raise ServingError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > config.max_file_bytes:
        raise ServingError(f"{path} is over image.max_file_bytes = {config.max_file_bytes:,}")
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
