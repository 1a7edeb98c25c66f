"""Sources in a bucket (a real S3 API on loopback): the same dataset as from disk, the source-root rule on
prefixes, hostile objects quarantined with a reason, and problems with the bucket itself in one line."""

from __future__ import annotations

import io
import random

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmpipe.config import ImageConfig
from mmpipe.errors import SourceError
from mmpipe.ingest import bucket as bucket_source
from mmpipe.ingest import ingest
from mmpipe.ingest.reasons import Reason
from mmpipe.ingest.runner import clean_in_parallel, finish_ingest, plan_ingest
from mmpipe.ingest.sources import open_source
from mmpipe.ingest.version import QUARANTINE_DIR
from tests.fixtures.datasets import make_config


def png(colour: tuple[int, int, int], side: int = 12) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, "PNG")
    return out.getvalue()


def noise_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(0).randbytes(side * side * 3)).save(out, "PNG")
    return out.getvalue()


def quarantine_of(version) -> dict[str, tuple[str, str]]:
    """raw image reference -> (reason, detail) of every quarantined row."""
    rows = [row for path in sorted((version.data_dir / QUARANTINE_DIR).glob("*.parquet"))
            for row in pq.read_table(path).to_pylist()]
    return {row["image"]: (row["reason"], row["detail"]) for row in rows}


def test_a_bucket_manifest_ingests_to_the_same_dataset_as_its_files_on_disk(bucket, sample_manifest, tmp_path):
    url = f"{bucket.upload(sample_manifest.parent, 'set')}/{sample_manifest.name}"
    on_disk = ingest(sample_manifest, make_config(tmp_path / "disk"))
    in_bucket = ingest(url, make_config(tmp_path / "bucket"))
    assert in_bucket.version == on_disk.version  # same rows, same pixels, same splits: the same shards
    assert (in_bucket.accepted, in_bucket.quarantined, in_bucket.duplicates) == (
        on_disk.accepted, on_disk.quarantined, on_disk.duplicates)
    assert in_bucket.quarantined.get("path_outside_root")  # the sample's ../outside.jpg stays outside
    assert in_bucket.source["path"] == url and in_bucket.source["root"] == bucket.url("set")


def test_hostile_references_and_objects_are_quarantined_with_a_reason(bucket, tmp_path):
    put = lambda key, data: bucket.fs.pipe_file(f"{bucket.name}/{key}", data)  # noqa: E731
    put("set/good.png", png((200, 10, 10)))
    put("outside.png", png((10, 200, 10)))  # exists, but above the manifest's prefix
    put("other/x.png", png((10, 10, 200)))
    put("set/empty.png", b"")
    put("set/big.png", noise_png(64))  # ~12 KB, over the 1,000-byte limit below
    put("set/gone.png", png((9, 9, 9)))
    rows = {"good.png": "kept", "../outside.png": "up", f"s3://{bucket.name}/other/x.png": "url",
            "/other/x.png": "absolute", "s3://another-bucket/x.png": "bucket", "gs://elsewhere/x.png": "scheme",
            "empty.png": "empty", "nope.png": "missing", "big.png": "large", "gone.png": "deleted",
            f"s3://{bucket.name}/set/good.png": "url inside", "/set/good.png": "absolute inside"}
    manifest = "text,image,label\n" + "".join(f"{text} {n},{image},a\n" for n, (image, text) in enumerate(rows.items()))
    put("set/manifest.csv", manifest.encode())
    config = make_config(tmp_path / "data", **{"ingest.classes": ["a"], "image.max_file_bytes": 1000})

    plan = plan_ingest(bucket.url("set/manifest.csv"), config)
    bucket.fs.rm(f"{bucket.name}/set/gone.png")  # deleted after it was listed, before it was read
    version = finish_ingest(plan, list(clean_in_parallel(plan, config)), config, 0.0)

    quarantined = quarantine_of(version)
    reasons = {image: reason for image, (reason, _) in quarantined.items()}
    assert reasons == {
        "../outside.png": "path_outside_root", f"s3://{bucket.name}/other/x.png": "path_outside_root",
        "/other/x.png": "path_outside_root", "s3://another-bucket/x.png": "path_outside_root",
        "gs://elsewhere/x.png": "path_outside_root", "empty.png": "image_unreadable", "nope.png": "image_missing",
        "big.png": "image_too_large", "gone.png": "image_missing"}
    assert quarantined["empty.png"][1] == "file is empty"
    assert quarantined["gone.png"][1] == "no object at 'gone.png'"
    assert version.accepted == 3  # good.png: by its name, its URL and its absolute path inside the prefix
    assert version.rows_read == len(rows) == version.accepted + len(quarantined)


class CountingFetches:
    """The real filesystem, with the bytes each `cat` brought back noted per object."""

    def __init__(self, fs):
        self.fs, self.fetched = fs, {}

    def cat(self, paths, **kwargs):
        results = self.fs.cat(paths, **kwargs)
        self.fetched.update({path: len(data) for path, data in results.items() if isinstance(data, bytes)})
        return results

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_an_oversized_object_is_refused_from_its_first_bytes_over_the_limit(bucket, monkeypatch):
    """One byte over the limit tells a too-large object: fetching it whole would let one object fill memory."""
    bucket.fs.pipe_file(f"{bucket.name}/set/big.png", noise_png(64))  # ~12 KB
    bucket.fs.pipe_file(f"{bucket.name}/set/small.png", png((1, 2, 3)))
    counting, real_open_url = [], bucket_source.open_url

    def open_counting(url):
        fs, root = real_open_url(url)
        counting.append(CountingFetches(fs))
        return counting[-1], root

    monkeypatch.setattr(bucket_source, "open_url", open_counting)
    location = bucket_source.BucketLocation(bucket.url("set/manifest.csv"), f"{bucket.name}/set")
    config = ImageConfig(size=16, max_file_bytes=1000)
    [(_, images)] = list(location.windows([{"image": "big.png"}, {"image": "small.png"}], config))
    assert images.read("big.png").reason is Reason.IMAGE_TOO_LARGE
    assert images.read("small.png") == png((1, 2, 3))
    fetched = {path.rsplit("/", 1)[-1]: size for path, size in counting[0].fetched.items()}
    assert fetched == {"big.png": 1001, "small.png": len(png((1, 2, 3)))}


def test_a_folder_tree_on_a_prefix_reads_like_the_same_tree_on_disk(bucket, tmp_path):
    tree = tmp_path / "tree"
    for label, names in {"cat": ["a.png", "b.jpg"], "dog": ["c.png"]}.items():
        (tree / label).mkdir(parents=True)
        for name in names:
            (tree / label / name).write_bytes(png((len(name), 0, 0)))
    (tree / "cat" / "a.txt").write_text("a cat on a mat")
    (tree / "dog" / "notes.md").write_text("not an image")
    (tree / "dog" / "old").mkdir()
    (tree / "dog" / "old" / "d.png").write_bytes(png((1, 1, 1)))
    (tree / "README").write_text("stray")
    url = bucket.upload(tree, "tree")

    on_disk, in_bucket = open_source(tree), open_source(url + "/")
    fields = ("row", "source", "text", "image", "label", "reason", "detail")
    assert [{key: row[key] for key in fields} for row in in_bucket.rows()] == [
        {key: row[key] for key in fields} for row in on_disk.rows()]
    assert in_bucket.ignored == on_disk.ignored == ["README (not inside a <label>/ folder)",
                                                   "dog/notes.md (not an image)", "dog/old (not an image)"]
    assert in_bucket.kind == "folder"


def test_an_unchanged_bucket_is_not_cleaned_again_and_a_changed_object_only_in_its_chunk(bucket, sample_manifest,
                                                                                      tmp_path):
    url = f"{bucket.upload(sample_manifest.parent, 'set')}/{sample_manifest.name}"
    config = make_config(tmp_path / "data")
    first = ingest(url, config)
    plan = plan_ingest(url, config)
    assert plan.reusable is not None and plan.reusable.version == first.version

    image = next(row["image"] for row in open_source(sample_manifest).rows() if row["image"].endswith(".png"))
    bucket.fs.pipe_file(f"{bucket.name}/set/{image}", png((0, 255, 0)))  # new bytes: a new ETag
    plan = plan_ingest(url, config)
    assert plan.reusable is None
    results = list(clean_in_parallel(plan, config))
    assert sum(not result.cached for result in results) == 1 < len(results)


@pytest.mark.parametrize(("where", "expected"), [
    ("set/nothing.csv", "does not exist"),
    ("no-such-prefix/", "does not exist"),
])
def test_a_missing_source_object_is_one_line(bucket, where, expected):
    with pytest.raises(SourceError, match=expected) as raised:
        open_source(bucket.url(where))
    assert "\n" not in str(raised.value)


def test_a_source_in_a_missing_bucket_is_one_line(s3_endpoint):
    with pytest.raises(SourceError, match=r"s3://no-such-bucket-mmpipe/m\.csv does not exist"):
        open_source("s3://no-such-bucket-mmpipe/m.csv")


def test_a_refused_source_says_which_credentials_to_check(denying_endpoint):
    with pytest.raises(SourceError, match="access to s3://secret/set/manifest.csv was denied .*AWS_ACCESS_KEY_ID"):
        open_source("s3://secret/set/manifest.csv")
