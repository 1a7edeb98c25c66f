"""Ingest's image standardization (mmpipe.ingest.clean.image, the reference) as TensorFlow ops.

The same decode scale for JPEGs as Pillow's `draft`, EXIF orientation from the file's Orientation
tag, alpha over the background, the same antialiased bilinear filter and the same pad/crop
geometry. Pixels can differ by a rounding step where Pillow uses fixed-point arithmetic and rounds
between its two resize passes; 16-bit images keep the high byte instead of Pillow's rounding.
TIFF is not decodable by TensorFlow, and its GIF decoder drops transparency.
"""

from __future__ import annotations

import tensorflow as tf

from mmpipe.config import ImageConfig

_EXIF_SCAN_BYTES = 65536  # the Orientation tag sits in the first IFD, near the start of the file


class ImageOps(tf.Module):
    """`standardize_image` on a batch of encoded images: [B, S, S, 3] uint8."""

    def __init__(self, config: ImageConfig):
        super().__init__(name="mmpipe_image_ops")
        self.image_config = config

    def __call__(self, images):
        """mmpipe.ingest.clean.image.standardize_image on a batch of encoded images."""
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
