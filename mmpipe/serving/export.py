"""The serving export: a SavedModel that takes raw UTF-8 text and encoded image bytes.

RUNS/<run_id>/serving/ holds the trained model wrapped with the ingest's cleaning rewritten as
TensorFlow ops (mmpipe.ingest.clean.text and mmpipe.ingest.clean.image are the reference), so a caller sends
what it has (a string, the bytes of a JPEG/PNG/WebP/GIF/BMP file) and gets class probabilities
and class names, with no Python, Pillow or mmpipe on the serving side. Endpoints:

* `serve(text, image)` -> {"probabilities": [B, C], "label": [B], "classes": [B, C]}
* `standardize(text, image)` -> {"text": [B], "image": [B, S, S, 3] uint8}: what the model sees.

(The text variant takes only `text`, the image variant only `image`.)

How close the two paths are, and where they differ, is said in text_ops.py and image_ops.py
(tests/serving/test_export.py measures it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf

from mmpipe.config import ImageConfig, TextConfig
from mmpipe.errors import ServingError
from mmpipe.files import commit
from mmpipe.runs.record import RunDir
from mmpipe.serving.image_ops import ImageOps
from mmpipe.serving.text_ops import TextOps
from mmpipe.wording import first_line


class Standardizer(tf.Module):
    """What the model sees, from raw inputs: ingest's cleaning as TF ops (tables tracked for export)."""

    def __init__(self, text: TextConfig, image: ImageConfig):
        super().__init__(name="mmpipe_standardizer")
        self.text = TextOps(text)
        self.image = ImageOps(image)


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
    final = RunDir(run_dir).serving
    temp, old = final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")
    for leftover in (temp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    archive.write_out(str(temp), verbose=False)
    if final.exists():
        final.rename(old)  # a reader sees the old export or the new one, never a half-deleted one
    commit(temp, final)
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
    path = RunDir(run_dir).serving
    if not (path / "saved_model.pb").is_file():
        raise ServingError(f"run {Path(run_dir).name} has no serving export at {path}: it was trained with "
                           "train.export_serving = false, before exports existed, or did not finish; train a new run")
    try:
        return tf.saved_model.load(str(path))
    except (OSError, ValueError, LookupError, tf.errors.OpError) as error:  # what a truncated or edited file raises
        raise ServingError(f"the serving export of run {Path(run_dir).name} at {path} is damaged "
                           f"({first_line(error)}); it was changed after training or cut short by the disk: train a "
                           "new run") from None
