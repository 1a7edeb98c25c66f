"""The model learns: when the label depends on one input only, that branch beats chance clearly.

A user's first-day workflow end to end: generate data, ingest, `contracts init` for the new
classes, validate, train, and read the held-out accuracy.
"""

import csv
import random

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmpipe.contracts.validate import validate_dataset
from mmpipe.ingest import ingest
from mmpipe.ingest.version import load_dataset
from mmpipe.runs.record import RunDir
from mmpipe.sample import DAY_WORDS, NIGHT_WORDS, encode_image
from mmpipe.train import train
from mmpipe.train.inputs import make_dataset
from tests.fixtures.datasets import make_config

pytestmark = pytest.mark.slow  # trains models

ROWS = 160
FILLER = "A picture of something, seen from the street."


def scene(colour: str, rng: random.Random, pixels: np.random.Generator) -> Image.Image:
    """A red or blue patch at a random place on a noisy grey background."""
    image = Image.fromarray(np.clip(128 + pixels.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8))
    left, top = rng.randint(0, 12), rng.randint(0, 12)
    fill = (200, 40, 40) if colour == "red" else (40, 40, 200)
    ImageDraw.Draw(image).rectangle((left, top, left + 11, top + 11), fill=fill)
    return image


def write_source(folder, informative: str):
    """Labels from the image's patch colour (`image`) or the caption's time of day (`text`); the other is noise."""
    rng, pixels = random.Random(3), np.random.default_rng(3)
    (folder / "images").mkdir(parents=True)
    rows = []
    for index in range(ROWS):
        colour, time_of_day = rng.choice(["red", "blue"]), rng.choice(["day", "night"])
        name = f"images/{index:04d}.png"
        shown = colour if informative == "image" else rng.choice(["red", "blue"])
        (folder / name).write_bytes(encode_image(scene(shown, rng, pixels), "PNG", "RGB"))
        words = DAY_WORDS if time_of_day == "day" else NIGHT_WORDS
        text = f"{rng.choice(words)} number {index}" if informative == "text" else f"{FILLER} {index}"
        rows.append({"text": text, "image": name, "label": colour if informative == "image" else time_of_day})
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


@pytest.mark.parametrize("informative", ["image", "text"])
def test_the_informative_branch_beats_chance(tmp_path, informative):
    manifest = write_source(tmp_path / "source", informative)
    values = {"image.size": 16, "runs_dir": str(tmp_path / "runs"),
              "model.variant": informative, "model.conv_filters": [8, 16], "model.lstm_units": 16,
              "model.embedding_dim": 16, "model.sequence_length": 6, "model.dense_units": 16,
              "train.epochs": 12, "train.batch_size": 16, "train.early_stopping_patience": 12,
              "model.learning_rate": 0.01}
    config = make_config(tmp_path / "data", **values)
    ingest(manifest, config)
    assert validate_dataset(config.data_dir, config).success
    result = train(config)
    model = keras.models.load_model(RunDir(result.run_dir).model)
    version = load_dataset(config.data_dir)
    correct = total = 0
    for split in ("val", "test"):
        for inputs, labels in make_dataset(version, split, batch_size=64, variant=informative):
            predicted = model.predict(inputs, verbose=0).argmax(axis=1)
            correct += int((predicted == labels.numpy().argmax(axis=1)).sum())
            total += len(predicted)
    assert total >= 20
    assert correct / total >= 0.75, f"{informative} branch: {correct}/{total} held out, chance is 0.5"
