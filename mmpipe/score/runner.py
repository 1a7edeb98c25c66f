"""The scoring driver: plan -> clean and predict chunks in parallel -> write the scoring, whoever runs the steps.

Rows are read and cleaned by ingest's own code (the run's text and image settings; a broken image is
quarantined with its reason, never scored), so a row scored here gets the prediction its evaluation gave it.
Each chunk's cleaned rows and predictions are kept under OUT/cache/, keyed by the chunk's content, the
settings and the run: a scoring killed halfway redoes only the chunks it had not finished.
flows/score.py hands the same steps over as Prefect tasks.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmpipe.config import Config, ScoreConfig
from mmpipe.errors import ScoringError
from mmpipe.files import stable_hash
from mmpipe.ingest.bucket import BucketLocation
from mmpipe.ingest.chunks import ChunkPlan, ChunkResult, code_fingerprint, plan_chunks, process_chunk
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.shards import write_table
from mmpipe.ingest.sources import RawSource, open_source
from mmpipe.ingest.watch import source_key
from mmpipe.ingest.workers import chunk_workers, clean_chunk, handing_chunks_to, worker_deaths
from mmpipe.runs.record import RunDir, RunRecord, load_record
from mmpipe.score.features import NUMERIC, row_features, words_vectorizer
from mmpipe.storage.urls import is_url

SCORES_DIR = "scores"  # beside the data dir, unless score.out_dir says
CACHE_DIR = "cache"


@dataclass
class ScorePlan:
    """One scoring: the source, its chunks, the run that scores them, and where the result goes."""

    source: RawSource
    run_dir: Path
    record: RunRecord
    out_root: Path
    chunks: list[ChunkPlan]
    version: str  # the scoring's name: its chunks' content, the settings and the run
    settings: Config  # how rows are cleaned: the run's own text and image settings
    plan_s: float

    @property
    def cache_dir(self) -> Path:
        return self.out_root / CACHE_DIR / source_key(self.source.describe()["path"])[:12]

    @property
    def out_dir(self) -> Path:
        return self.out_root / self.version

    @property
    def location(self) -> SourceLocation | BucketLocation:
        return self.source.location()


@dataclass(frozen=True)
class ScoredChunk:
    """A chunk cleaned and predicted: its scored rows (accepted ones) and its cleaned rows (for the quarantine)."""

    index: int
    path: Path
    cleaned: Path
    raw: Path
    rows: int
    scored: int
    cached: bool


def scores_root(config: Config) -> Path:
    """Where scorings go: score.out_dir, else `scores` beside a local data dir (in the working directory for a
    data dir in a bucket)."""
    if config.score.out_dir is not None:
        return Path(config.score.out_dir).absolute()
    if is_url(config.data_dir):
        return Path(f"mmpipe-{SCORES_DIR}").absolute()
    return Path(config.data_dir).absolute().parent / SCORES_DIR


def plan_scoring(source: str | Path, run_dir: Path, config: Config) -> ScorePlan:
    """Open and stream the source into staged, fingerprinted chunks (raises SourceError, ScoringError)."""
    started = time.perf_counter()
    run = RunDir(Path(run_dir).absolute())
    record = load_record(run)
    if record.status != "completed":
        raise ScoringError(f"run {record.run_id} is {record.status}; only a completed run can score data")
    raw_source = open_source(source, labelled=False)
    run_config = record.run_config
    settings = run_config.model_copy(update={"ingest": run_config.ingest.model_copy(
        update={"classes": None, "chunk_rows": config.ingest.chunk_rows})})
    out_root = scores_root(config)
    settings_key = stable_hash([settings.ingest_hash(), code_fingerprint(), "score"])
    cache = out_root / CACHE_DIR / source_key(raw_source.describe()["path"])[:12]
    chunks = plan_chunks(raw_source, cache, settings_key, config.ingest.chunk_rows)
    version = stable_hash([[chunk.key for chunk in chunks], record.run_id, config.score.model_dump(
        mode="json", exclude={"out_dir"})], 16)
    return ScorePlan(source=raw_source, run_dir=run.path, record=record, out_root=out_root, chunks=chunks,
                     version=version, settings=settings, plan_s=round(time.perf_counter() - started, 3))


def score_chunk(chunk: ChunkPlan, location: SourceLocation | BucketLocation, cache_dir: Path, run_dir: Path,
                settings: Config, batch_size: int, cleaned: ChunkResult | None = None) -> ScoredChunk:
    """Clean one chunk with ingest's code (unless `cleaned` already), then predict its accepted rows (or find
    both done before)."""
    cleaned = cleaned or clean_to_score(chunk, location, settings, cache_dir)
    run_id = Path(run_dir).name
    path = cache_dir / "scored" / f"{chunk.key}-{run_id}.parquet"
    if path.exists():
        return ScoredChunk(chunk.index, path, cleaned.path, chunk.raw_path, chunk.rows,
                           pq.read_metadata(path).num_rows, cached=True)
    table = pq.read_table(cleaned.path)
    accepted = table.filter(pc.is_null(table["reason"]))
    write_table(_scored_rows(accepted, Path(run_dir), settings.image.size, batch_size), path)
    return ScoredChunk(chunk.index, path, cleaned.path, chunk.raw_path, chunk.rows, accepted.num_rows, cached=False)


def clean_to_score(chunk: ChunkPlan, location: SourceLocation | BucketLocation, settings: Config,
                   cache_dir: Path) -> ChunkResult:
    """Ingest's cleaning of one chunk of data to score (labels optional, never judged), on the chunk workers
    handed to (`cleaning_workers`), else in this thread."""
    return clean_chunk(chunk, location, settings, cache_dir, labelled=False)


# A process pool costs a fixed start (a forkserver importing the cleaning code: 0.34 s of a core the prediction
# wants) that threads do not; threads, though, share the GIL with the prediction running beside them. Measured on
# 2 cores (demo champion, 256-row chunks): 8 chunks 1.59 s on threads vs 1.94 s on processes (2.0 s with the
# forkserver already started: the cores are full either way); 32 chunks 6.83 s vs 4.91 s.
PROCESSES_FROM_CHUNKS_PER_WORKER = 5


@contextlib.contextmanager
def cleaning_workers(chunks: int, workers: int) -> Iterator[Executor]:
    """The `workers` chunk workers that clean a scoring's chunks beside its prediction (and `clean_to_score` in
    this context hands its chunk to): processes when there are enough chunks to pay for their start, else threads
    (see `mmpipe.ingest.workers`)."""
    kind = "processes" if chunks >= PROCESSES_FROM_CHUNKS_PER_WORKER * workers and workers > 1 else "threads"
    with chunk_workers(workers, kind) as pool, handing_chunks_to(pool):
        yield pool


_MODELS: dict[tuple[str, int], Any] = {}
_MODEL_LOCK = threading.Lock()  # one prediction at a time per process: TensorFlow already uses every core


def _scored_rows(accepted: pa.Table, run_dir: Path, image_size: int, batch_size: int) -> pa.Table:
    """id, label (as given, or null), the predicted class, its probability, every class's, the drift features."""
    from mmpipe.train.inputs import INPUTS, image_view

    record = load_record(RunDir(run_dir))
    with _MODEL_LOCK:
        model = _model(RunDir(run_dir))
        probabilities = np.zeros((accepted.num_rows, len(record.classes)), dtype=np.float32)
        for start in range(0, accepted.num_rows, batch_size):
            rows = accepted.slice(start, batch_size)
            # Every batch is padded to batch_size (the last row repeated): one input shape, so the model's graph is
            # traced once, not once per chunk's last batch (0.7 s of 3.3 on 2,000 rows). Rows are independent.
            padded = np.minimum(np.arange(batch_size), rows.num_rows - 1)
            inputs = {}
            if "text" in INPUTS[record.variant]:
                inputs["text"] = np.array(rows["text"].to_pylist(), dtype=object)[padded]
            if "image" in INPUTS[record.variant]:
                inputs["image"] = image_view(rows["image"], image_size)[padded]
            found = np.asarray(model.predict_on_batch(inputs))
            probabilities[start:start + rows.num_rows] = found[:rows.num_rows]
        features = row_features(accepted, words_vectorizer(model))
    classes = np.array(record.classes, dtype=object)
    return pa.table({
        "id": accepted["id"], "label": accepted["label"], "group": accepted["group"], "extra": accepted["extra"],
        "predicted": pa.array(classes[probabilities.argmax(axis=1)] if len(probabilities) else [], pa.string()),
        "confidence": pa.array(probabilities.max(axis=1) if len(probabilities) else [], pa.float32()),
        "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(probabilities.ravel(), pa.float32()),
                                                           len(record.classes)),
        **{name: pa.array(features[name], pa.float64()) for name in NUMERIC if name in features},
        "image_format": pa.array(features["image_format"], pa.string()),
    })


def _model(run: RunDir):
    """The run's model, loaded once per process (and again only when model.keras changed)."""
    from mmpipe.train.model import load_model

    key = (str(run.model), run.model.stat().st_mtime_ns)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(run.model)
    return _MODELS[key]


def model_of(run_dir: Path):
    with _MODEL_LOCK:
        return _model(RunDir(run_dir))


ChunkMapper = Callable[[ScorePlan, ScoreConfig], Iterator[ScoredChunk]]


def score_in_order(plan: ScorePlan, config: ScoreConfig, workers: int = 0) -> Iterator[ScoredChunk]:
    """Score the plan's chunks in this process: the next chunks are cleaned on `workers` chunk workers (default:
    one per core; see `cleaning_workers`) while this one is predicted, a few chunks ahead at most, so memory stays
    flat. flows/score.py maps them as Prefect tasks instead."""
    workers = workers or len(os.sched_getaffinity(0))
    with cleaning_workers(len(plan.chunks), workers) as pool:
        ahead = {}
        for index, chunk in enumerate(plan.chunks):
            for later in plan.chunks[index:index + workers + 1]:
                if later.index not in ahead:
                    ahead[later.index] = pool.submit(process_chunk, later, plan.location, plan.settings,
                                                     plan.cache_dir, labelled=False)
            with worker_deaths():
                cleaned = ahead.pop(chunk.index).result()
            yield score_chunk(chunk, plan.location, plan.cache_dir, plan.run_dir, plan.settings, config.batch_size,
                              cleaned)


@dataclass(frozen=True)
class ScoreSteps:
    """How each step of a scoring runs: plain functions here; flows/score.py passes Prefect tasks."""

    plan: Callable[[str | Path, Path, Config], ScorePlan] = plan_scoring
    score: ChunkMapper = score_in_order
    finish: Callable[..., dict[str, Any]] | None = None


def score_source(source: str | Path, run_dir: Path, config: Config, steps: ScoreSteps = ScoreSteps(),
                 on_chunk: Callable[[int, int, ScoredChunk], None] | None = None) -> dict[str, Any]:
    """The one scoring driver: plan -> score every chunk -> write the scoring (see mmpipe.score.output).

    Returns what scoring.json holds. Raises SourceError (an unusable source) or ScoringError.
    """
    from mmpipe.score.output import finish_scoring

    plan = steps.plan(source, run_dir, config)
    started = time.perf_counter()
    results = []
    for done, result in enumerate(steps.score(plan, config.score), start=1):
        results.append(result)
        if on_chunk is not None:
            on_chunk(done, len(plan.chunks), result)
    finish = steps.finish or finish_scoring
    return finish(plan, sorted(results, key=lambda result: result.index), config, time.perf_counter() - started)
