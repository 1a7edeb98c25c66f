"""What drift is measured on: features the pipeline already has for every cleaned row, and the reference
they are compared with (the run's own train split, and its test predictions).

Numbers: text length (characters), image brightness and colourfulness (computed by ingest), the original
image's longer side, and the share of the row's words outside the model's own vocabulary. Categories: the
original image format, and the predicted class (against the run's predictions on its test split).

The out-of-vocabulary rate is the exception: the vocabulary was fitted on the train split, where nearly
every word is known by construction, so its reference is the held-out rows (val and test), which meet the
vocabulary as new data does, and only a rise counts (mmpipe.score.drift): rows the model trained on have
fewer unknown words, not new ones. Measured: against the train split, 20 of 20 random halves of a
dataset's own rows were "drifted".

The reference is sampled once per run and kept in RUNS/RUN_ID/drift_reference.json: it describes the
dataset version the run trained on, which never changes, so it stays true while the data dir moves on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmpipe.files import write_json_atomic
from mmpipe.ingest.version import DatasetVersion, load_dataset
from mmpipe.runs.record import RunDir, RunRecord
from mmpipe.train.inputs import split_paths

NUMERIC = ("text_chars", "brightness", "colourfulness", "image_side", "oov_rate")
CATEGORICAL = ("image_format", "predicted")
REFERENCE_FILE = "drift_reference.json"
REFERENCE_FORMAT = 3  # 2: the out-of-vocabulary rate of held-out rows; 3: slice values
_COLUMNS = ("text", "image_brightness", "image_colourfulness", "orig_width", "orig_height", "orig_format", "group",
            "extra")
# What a slice of the train sample is compared on (the unknown-word rate's reference is other rows).
SLICED = ("text_chars", "brightness", "colourfulness", "image_side", "image_format")


def row_features(rows: pa.Table, words=None) -> dict[str, np.ndarray]:
    """The drift features of cleaned rows (shard or chunk columns); `words`: the model's words vectorizer."""
    texts = rows["text"].to_pylist()
    return {
        "text_chars": np.array([len(text) for text in texts], dtype=np.float64),
        "brightness": rows["image_brightness"].to_numpy(zero_copy_only=False).astype(np.float64),
        "colourfulness": rows["image_colourfulness"].to_numpy(zero_copy_only=False).astype(np.float64),
        "image_side": np.maximum(rows["orig_width"].to_numpy(zero_copy_only=False),
                                 rows["orig_height"].to_numpy(zero_copy_only=False)).astype(np.float64),
        "image_format": np.array(rows["orig_format"].to_pylist(), dtype=object),
        **({"oov_rate": oov_rates(texts, words)} if words is not None else {}),
    }


def oov_rates(texts: list[str], words) -> np.ndarray:
    """Per text, the share of its tokens the vectorizer maps to its out-of-vocabulary id (1); NaN without tokens."""
    import tensorflow as tf

    if not texts:
        return np.zeros(0)
    ids = np.asarray(words(tf.constant(texts)))
    tokens = (ids > 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tokens > 0, (ids == 1).sum(axis=1) / np.maximum(tokens, 1), np.nan)


def words_vectorizer(model):
    """The model's words tokenizer (None for a model without one: an image model, character n-grams only)."""
    return next((layer for layer in model.layers if layer.name == "text_words"), None)


def slice_values(rows: pa.Table, names: list[str]) -> dict[str, list[str]]:
    """Each row's value of every `evaluate.slice_by` column (`group`, or a manifest column kept in `extra`), as the
    evaluation's slices name them."""
    from mmpipe.evaluate.slices import slice_label

    groups = rows["group"].to_pylist() if "group" in rows.column_names else [None] * rows.num_rows
    extras = [json.loads(text) if text else {} for text in rows["extra"].to_pylist()]
    return {name: [slice_label(groups[i] if name == "group" else extras[i].get(name)) for i in range(rows.num_rows)]
            for name in names}


def drift_reference(run: RunDir, record: RunRecord, model, rows: int, slice_by: list[str],
                    version: DatasetVersion | None = None) -> dict[str, Any]:
    """The run's reference, from RUNS/RUN_ID/drift_reference.json when it was made for this run and settings, else
    sampled from the train split of the dataset version the run trained on (every k-th row; `version` when the
    caller has it open and checked) and kept. Made when the run is evaluated (mmpipe.evaluate), while its data is
    certainly there: a champion kept after the data dir moved on still has its reference.

    Returns {"features": {name: values}, "rows", "dataset_version"}: the one kept with other settings when the
    data is gone, or {"missing": why} when none was kept and the data dir holds another version now."""
    path = run.path / REFERENCE_FILE
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = None  # none kept yet, or a damaged one: made again
    ours = isinstance(kept, dict) and kept.get("format") == REFERENCE_FORMAT and kept.get("run_id") == record.run_id
    if ours and kept.get("sampled") == rows and kept.get("slice_by") == list(slice_by):
        return kept
    if version is None:
        try:
            version = load_dataset(Path(record.data_dir))
            gone = version.version != record.dataset_version or bool(version.changed_shards())
        except Exception:  # noqa: BLE001 - any unreadable data dir: the data is gone, said below
            gone = True
        if gone and ours:
            return kept  # made with other settings (sample size, slices), but of the very rows the run learned from
        if gone:
            return {"missing": f"{record.data_dir} no longer holds dataset {record.dataset_version} that run "
                               f"{record.run_id} trained on, and no drift reference was kept from it"}
    sample = _sample(version, ("train",), rows)
    features = {name: _listed(values) for name, values in row_features(sample).items()}
    words = words_vectorizer(model)
    if words is not None:  # on rows the vocabulary was not fitted on
        features["oov_rate"] = _listed(oov_rates(_sample(version, ("val", "test"), rows)["text"].to_pylist(), words))
    predictions = run.predictions
    if predictions.is_file():  # the run's own test split, as its primary evaluation predicted it
        features["predicted"] = pq.read_table(predictions, columns=["predicted"])["predicted"].to_pylist()
    reference = {"format": REFERENCE_FORMAT, "run_id": record.run_id, "dataset_version": record.dataset_version,
                 "sampled": rows, "rows": sample.num_rows, "features": features, "slice_by": list(slice_by),
                 "slices": slice_values(sample, list(slice_by))}
    write_json_atomic(path, reference)
    return reference


def _sample(version, splits: tuple[str, ...], rows: int) -> pa.Table:
    """About `rows` rows of `splits` (every k-th), the columns the features need."""
    paths = [path for split in splits for path in split_paths(version, split)]
    step = max(1, math.ceil(sum(version.rows_of(split) for split in splits) / rows))
    tables, seen = [], 0
    for path in paths:
        table = pq.read_table(path, columns=list(_COLUMNS))
        tables.append(table.take(np.arange((-seen) % step, table.num_rows, step)))
        seen += table.num_rows
    if not tables:
        return pa.table({name: pa.array([], pa.string()) for name in _COLUMNS})
    return pa.concat_tables(tables, promote_options="default")


def _listed(values: np.ndarray) -> list:
    """JSON-ready values: numbers rounded to what the statistics need, NaN as None."""
    if values.dtype == object:
        return values.tolist()
    return [None if math.isnan(value) else round(float(value), 6) for value in values]
