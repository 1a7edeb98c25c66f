"""The one configuration object: defaults < mmpipe.toml < MMPIPE_* variables < CLI flags.

Config enters at the edge (the CLI or a flow parameter) and is passed down explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from mmpipe.config_layers import ENV_CONFIG_FILE, Section, config_file, merge, nest, parse_env_value, read_toml
from mmpipe.config_serve import ServeConfig, source_dir_name
from mmpipe.errors import ConfigError
from mmpipe.files import FAULT_ENV, stable_hash
from mmpipe.storage.urls import CACHE_ENV, is_url, join

ENV_PREFIX = "MMPIPE_"
# The [train] settings that say where training runs; a machine's own MMPIPE_TRAIN__* variables set them.
MACHINE_SETTINGS = ("strategy", "cpu_devices")
# Not a setting either: set (or `mmpipe --verbose`) to see tracebacks and every library's log lines.
ENV_DEBUG = "MMPIPE_DEBUG"
SPLITS = ("train", "val", "test")


class TextConfig(Section):
    """How text is normalized at ingest."""

    lowercase: bool = False
    max_chars: int = Field(1000, ge=1, description="longer text is truncated (and counted)")
    allow_empty: bool = Field(False, description="keep rows whose text is empty after cleaning")


class ImageConfig(Section):
    """How images are decoded and standardized at ingest."""

    size: int = Field(64, ge=4, le=1024, description="side S of the stored S x S x 3 image")
    fit: Literal["pad", "crop"] = Field("pad", description="letterbox-pad or center-crop to a square")
    background: tuple[int, int, int] = Field((255, 255, 255), description="RGB behind alpha and padding")
    max_file_bytes: int = Field(32 * 2**20, ge=1, description="larger files are rejected unread")
    max_pixels: int = Field(60_000_000, ge=1, description="larger images are rejected undecoded")

    @field_validator("background")
    @classmethod
    def _check_background(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= channel <= 255 for channel in value):
            raise ValueError("background channels must be 0..255, e.g. [255, 255, 255]")
        return value


class SplitRatios(Section):
    train: float = Field(0.8, ge=0)
    val: float = Field(0.1, ge=0)
    test: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _check_sum(self) -> SplitRatios:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"split ratios must add up to 1, got {self.train + self.val + self.test:g}")
        return self


class IngestConfig(Section):
    """What ingest accepts and how it lays out shards."""

    classes: list[str] | None = Field(None, description="if set, any other label is quarantined")
    split_ratios: SplitRatios = SplitRatios()
    shard_target_mb: float = Field(64.0, gt=0, description="approximate size of one shard file")
    chunk_rows: int = Field(256, ge=1, description="rows per unit of parallel and cached work")
    workers: int = Field(0, ge=0, description="parallel chunk workers; 0 means one per CPU core")
    parallel: Literal["threads", "processes"] = Field(
        "threads", description="what the chunk workers are: threads, or processes (each row's Python on its own "
        "core: faster when rows are mostly Python work, long texts and small images)")
    dask_address: str | None = Field(None, description="clean chunks on this Dask scheduler, e.g. tcp://host:8786")

    def worker_count(self) -> int:
        """`workers`, where 0 means one per CPU core."""
        return self.workers or os.cpu_count() or 1


class ContractsConfig(Section):
    """What the data contracts (Great Expectations suites) compare against."""

    suites_dir: Path | None = Field(
        None, description="folder of exported source suites (shards.json, dataset.json) that win over the ones "
        "inferred into the data dir; the project suites always apply"
    )
    min_train_per_class: int = Field(5, ge=0, description="fewer train rows in a class is a warning")
    split_tolerance: float = Field(0.1, ge=0, le=1, description="allowed |share - ratio| per split (a warning)")
    kl_threshold: float = Field(0.1, gt=0, description="label drift vs the reference beyond this KL is a warning")
    stats_tolerance: float = Field(0.25, gt=0, description="relative band around the reference's medians")
    max_orig_side: int = Field(20_000, ge=1, description="original width/height above this is a failure")


class ModelConfig(Section):
    """The fused model (text: vectorize -> embed -> LSTM; image: Conv2D blocks -> pool; Dense head; branch
    heads; the heads blended with weights fitted on validation).

    `preset = "seed"` is the original design, whatever the sizes below say (see mmpipe/train/model.py).
    """

    preset: Literal["default", "seed", "pooled_seed"] = Field(
        "default", description="seed: the original design; pooled_seed: it with global average pooling (the "
        "default until this one); for ablations")
    variant: Literal["fused", "text", "image"] = Field("fused", description="which branches the model uses")
    text_tokens: Literal["words+chars", "words", "chars"] = Field(
        "words+chars", description="words, character 1-3-grams (for names like document-open), or both")
    max_tokens: int = Field(20_000, ge=2, description="text vocabulary size per tokenizer, adapted on the train split")
    sequence_length: int = Field(32, ge=1, description="words per text (longer is cut); character n-grams: 3x")
    embedding_dim: int = Field(32, ge=1)
    lstm_units: int = Field(64, ge=1)
    conv_filters: tuple[int, ...] = Field((16, 32, 64, 128), min_length=1, description="filters of the 3x3 Conv2D "
                                          "layers, one block (convolution, batch normalization, 2x2 max-pool) each")
    batch_norm_momentum: float = Field(0.9, gt=0, lt=1, description="how slowly batch normalization's moving "
                                       "statistics (what validation and serving use) follow the batches")
    pooling: Literal["global_average_max", "global_average", "global_max", "flatten"] = Field(
        "global_average_max", description="after the convolutions (each followed by a 2x2 max-pool): global average "
        "and max pooling side by side, one of them, or flatten")
    dense_units: int = Field(64, ge=1)
    dropout_rate: float = Field(0.3, ge=0, lt=1, description="before and after the dense layer, before the branch "
                                "heads, and in the LSTMs")
    branch_loss_weight: float = Field(1.0, ge=0, description="fused model: each branch also has a head of its own, "
                                      "trained with this weight on its loss (0: no branch heads); the heads are "
                                      "blended with weights fitted on the validation split")
    modality_dropout: float = Field(0.2, ge=0, lt=0.5, description="fused model: share of training rows whose "
                                    "text features the fused head does not see (and as many whose image features)")
    augment: bool = Field(False, description="random flip, rotation, zoom and contrast while training")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="the blend's calibration, not smoothing, sets how "
                                   "confident the served probabilities are")
    learning_rate: float = Field(2e-3, gt=0, description="the start of the schedule")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="cosine: decays to 5% over the epochs")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW's decoupled weight decay")


class TrainConfig(Section):
    """How a model is fitted."""

    epochs: int = Field(30, ge=1, description="at most: early stopping ends a run that stopped improving")
    batch_size: int = Field(32, ge=1)
    shuffle_buffer: int = Field(2048, ge=1, description="rows; bounds memory, not the dataset size")
    early_stopping_monitor: Literal["val_macro_f1", "val_accuracy", "val_loss"] = Field(
        "val_macro_f1", description="what early stopping keeps the best epoch of (what promotion judges)")
    early_stopping_patience: int = Field(5, ge=1, description="epochs without a better monitored value")
    early_stopping_warmup: int = Field(5, ge=0, description="epochs before early stopping starts watching (a fused "
                                       "model's slower branch often only starts to learn after a few)")
    class_weights: Literal["auto", "balanced", "none"] = Field(
        "auto", description="balanced: weight classes by sqrt(largest class rows / their rows), capped at 4x; auto: "
        "the same once the largest class has 3x the rows of the smallest")
    export_serving: bool = Field(True, description="write RUNS/<run_id>/serving, the SavedModel `mmpipe predict` uses")
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = Field(
        "auto", description="how training is spread: one_device; mirrored (every local GPU, else the cpu_devices); "
        "multi_worker (the processes TF_CONFIG names, each mirrored over its own devices); auto: multi_worker when "
        "TF_CONFIG names several workers, else mirrored when more than one GPU is visible or, without a GPU, "
        "cpu_devices > 1, else one_device")
    cpu_devices: int = Field(1, ge=1, description="split the CPU into this many logical devices (mirrored over them "
                             "when there is no GPU); set before TensorFlow starts in the process")


class EvaluateConfig(Section):
    """How runs are scored and when a challenger replaces the champion."""

    batch_size: int = Field(64, ge=1)
    top_k: int = Field(2, ge=1, description="top-k accuracy counts a hit in the k most probable classes")
    ece_bins: int = Field(10, ge=1, description="confidence bins of the expected calibration error")
    promote_margin: float = Field(0.01, ge=0, description="macro F1 must improve by at least this much")
    max_class_f1_drop: float = Field(0.05, ge=0, description="no class's F1 may drop by more than this")
    min_gain_over_majority: float = Field(0.05, ge=-1, description="never promote a run whose accuracy does not beat "
                                          "always predicting the largest class by this much (-1: no floor)")
    slice_by: list[str] = Field(default_factory=list, description="more columns to slice the test metrics by (besides "
                                "class, image format, image size and text length): a shard column such as group, "
                                "or any column of the source manifest")
    min_slice_rows: int = Field(30, ge=1, description="slices with fewer test rows, and at most half of an even share "
                                "of their dimension's, are flagged small in the report")


class TrackingConfig(Section):
    """Where runs are mirrored for people to compare (MLflow). The run store stays the record."""

    uri: str | None = Field(None, description="an MLflow tracking server, e.g. http://127.0.0.1:5000; default: "
                            "MLFLOW_TRACKING_URI; neither set: no tracking")
    experiment: str | None = Field(None, description="the MLflow experiment and registered model name; default: "
                                   "the source's name (its folder, or folder/file for a manifest)")

    def resolved_uri(self, environ: Mapping[str, str] | None = None) -> str | None:
        """This setting, else MLflow's own variable."""
        environ = os.environ if environ is None else environ
        return self.uri or environ.get("MLFLOW_TRACKING_URI") or None


# What `mmpipe tune` searches unless [tune.space] says otherwise: every range holds the default above (so the first
# trial can be the configuration as set), and the widths stay near it (a 2-core machine trains a trial in a minute).
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "model": {"learning_rate": {"low": 5e-4, "high": 1e-2, "log": True}, "dropout_rate": {"low": 0.0, "high": 0.5},
              "weight_decay": {"low": 1e-5, "high": 1e-3, "log": True},
              "text_tokens": ["words+chars", "words", "chars"],
              "embedding_dim": [16, 32, 64], "lstm_units": [32, 64, 128], "dense_units": [32, 64, 128],
              "conv_filters": [[8, 16, 32, 64], [16, 32, 64, 128], [32, 64, 128]],
              "modality_dropout": {"low": 0.0, "high": 0.4}, "branch_loss_weight": [0.0, 0.5, 1.0],
              "augment": [False, True]},
    "train": {"batch_size": [16, 32, 64]},
}


class TuneConfig(Section):
    """How `mmpipe tune` searches the settings of [model] and [train] on a dataset (an Optuna study)."""

    trials: int = Field(20, ge=1, description="trials the study holds when the search ends (finished or pruned; a "
                        "failed one is tried again)")
    timeout_s: float | None = Field(None, gt=0, description="start no trial after this many seconds")
    parallel: int = Field(1, ge=1, description="trials at a time, each in a process of its own when more than one")
    random_trials: int = Field(6, ge=1, description="trials sampled at random before TPE models the results")
    pruning: bool = Field(True, description="end a trial early when its validation macro F1 is below the median of "
                          "the trials before it at the same epoch (Optuna's median pruner)")
    prune_after_trials: int = Field(4, ge=0, description="trials that always run to the end before any is pruned")
    prune_warmup_epochs: int = Field(5, ge=0, description="epochs a trial always gets (a fused model's slower "
                                     "branch often only starts to learn after a few)")
    start_with_config: bool = Field(True, description="the first trial is the configuration as set, so the search "
                                    "starts from what training without it would give")
    min_confidence: float = Field(0.9, ge=0.5, le=1, description="the best trial replaces the first (the "
                                  "configuration as set) only when it beats it on this share of paired bootstrap "
                                  "resamples of the validation rows: the best of many noisy scores is optimistic")
    space: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {section: dict(fields) for section, fields in DEFAULT_SPACE.items()},
        description='what is searched, per section and setting: { low = 1e-4, high = 1e-2, log = true } (a range; '
        'integers for an integer setting) or a list of choices, e.g. [tune.space.model] lstm_units = [32, 64, 128]')

    @field_validator("space")
    @classmethod
    def _check_space(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from mmpipe.tune.space import check_space

        check_space(value)
        return value


class ScoreConfig(Section):
    """How `mmpipe score` scores new data with a run, and when that data has drifted from what the run learned."""

    out_dir: Path | None = Field(None, description="where scorings go; default: `scores` beside the data dir")
    batch_size: int = Field(256, ge=1, description="rows per prediction batch")
    drift_alpha: float = Field(0.05, gt=0, lt=1, description="a feature drifts when its test rejects 'like the "
                               "training data' at this level, shared by the features (Bonferroni) ...")
    drift_min_ks: float = Field(0.1, gt=0, le=1, description="... and a number's KS statistic is at least this")
    drift_min_psi: float = Field(0.2, gt=0, description="... and a category's PSI is at least this")
    drift_min_rows: int = Field(30, ge=2, description="fewer scored rows: drift is not judged (and that is said)")
    reference_rows: int = Field(5000, ge=100, description="train rows sampled as the drift reference")


class Config(Section):
    """Everything that shapes mmpipe's outputs. Its hash is recorded with each output."""

    data_dir: Path | str = Field(Path("mmpipe-data"), description="a folder, or a bucket URL (s3://, gs://, az://)")
    runs_dir: Path | str = Field(Path("mmpipe-runs"), description="a folder, or a bucket URL (s3://, gs://, az://)")
    seed: int = 42
    storage_secret: str | None = Field(
        None, description="a Prefect Secret block holding a JSON object of storage variables (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...): set in the pipeline's process before it touches a bucket")
    text: TextConfig = TextConfig()
    image: ImageConfig = ImageConfig()
    ingest: IngestConfig = IngestConfig()
    contracts: ContractsConfig = ContractsConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig = ServeConfig()
    tracking: TrackingConfig = TrackingConfig()
    score: ScoreConfig = ScoreConfig()
    tune: TuneConfig = TuneConfig()

    @field_validator("data_dir", "runs_dir", mode="before")
    @classmethod
    def _url_or_path(cls, value: Any) -> Any:
        """A bucket URL stays a string (a Path would fold its `//`); anything else is a path."""
        if not isinstance(value, str | Path):  # a number or a table would fail later, far from its cause
            raise ValueError(f"must be a folder path or a bucket URL, as a string; got {type(value).__name__}")
        return value if is_url(value) else Path(value)

    def ingest_settings(self) -> dict[str, Any]:
        """The settings that shape ingest output; operational knobs (paths, parallelism) left out."""
        ingest = self.ingest.model_dump(mode="json", exclude={"workers", "parallel", "chunk_rows", "dask_address"})
        text, image = self.text.model_dump(mode="json"), self.image.model_dump(mode="json")
        return {"text": text, "image": image, "ingest": ingest}

    def ingest_hash(self) -> str:
        """Stable hash of `ingest_settings()`: same settings, same hash, on any machine."""
        return stable_hash(self.ingest_settings())

    def for_source(self, source: str | Path) -> Config:
        """The config a pipeline on `source` uses. With several `[serve] sources`, each gets its own
        data and runs dirs (DIR/<name>-<hash>), so their datasets, contracts and champions never mix;
        a source entry's own `contracts` folder is its exported source suites."""
        config = self
        entry = self.serve.entry_for(source)
        if entry is not None and entry.contracts is not None:
            contracts = self.contracts.model_copy(update={"suites_dir": entry.contracts})
            config = config.model_copy(update={"contracts": contracts})
        if len(self.serve.sources) < 2:
            return config
        name = source_dir_name(source)
        return config.model_copy(update={"data_dir": join(self.data_dir, name), "runs_dir": join(self.runs_dir, name)})

    def on_this_machine(self, environ: Mapping[str, str] | None = None) -> Config:
        """This config with the settings that describe the machine rather than the model (`train.strategy`,
        `train.cpu_devices`) taken from this machine's MMPIPE_* variables where it sets them: a deployment
        carries the config it was deployed with, and the work pool's job variables choose the devices."""
        environ = os.environ if environ is None else environ
        local = {key: parse_env_value(environ[f"{ENV_PREFIX}TRAIN__{key.upper()}"]) for key in MACHINE_SETTINGS
                 if f"{ENV_PREFIX}TRAIN__{key.upper()}" in environ}
        if not local:
            return self
        try:
            train = TrainConfig.model_validate({**self.train.model_dump(), **local})
        except ValidationError as error:
            raise ConfigError(f"invalid MMPIPE_TRAIN__* variable on this machine: {error.errors()[0]['msg']} "
                              f"({', '.join(f'{key} = {value!r}' for key, value in local.items())})") from None
        return self.model_copy(update={"train": train})

    def hash(self) -> str:
        """Stable hash of the whole config except where files go, how runs are scheduled and where they are mirrored,
        and how new data is scored (a scoring records its own settings)."""
        return stable_hash(self.model_dump(mode="json", exclude={"data_dir", "runs_dir", "storage_secret", "serve",
                                                          "tracking", "score", "tune"}))


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the config: defaults, then the TOML file, then MMPIPE_* variables, then `overrides`.

    Args:
        path: a TOML file; None means $MMPIPE_CONFIG, else ./mmpipe.toml if it exists, else defaults.
        overrides: dotted keys from CLI flags, e.g. {"data_dir": "out", "image.size": 32}.
        environ: the environment to read (os.environ when None). `MMPIPE_IMAGE__SIZE=32` sets image.size.

    Raises:
        ConfigError: unreadable file, unknown key or invalid value, naming where it came from.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    file = config_file(path, environ)
    if file is not None:
        merge(merged, read_toml(file))
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and name not in (ENV_CONFIG_FILE, ENV_DEBUG, FAULT_ENV, CACHE_ENV):
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            merge(merged, nest(keys, parse_env_value(raw)))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            merge(merged, nest(dotted.split("."), value))
    try:
        return Config.model_validate(merged)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        origin = f" (file {file}, MMPIPE_* variables, flags)" if file else " (MMPIPE_* variables, flags)"
        raise ConfigError(f"invalid configuration{origin}: {problems}") from None
