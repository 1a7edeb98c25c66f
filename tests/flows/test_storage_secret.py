"""Bucket credentials from a Prefect Secret block (`storage_secret`): set in the process before a bucket is touched,
never shown, and only storage variables."""

import pytest

from flows.environment import load_storage_secret
from mmpipe.config import Config
from mmpipe.errors import ConfigError, StorageError
from mmpipe.ingest.sources import open_source


def test_the_variables_in_a_secret_block_are_the_ones_the_bucket_is_reached_with(prefect_api, bucket, s3_endpoint,
                                                                                 monkeypatch):
    import s3fs
    from prefect.blocks.system import Secret

    bucket.fs.pipe_file(f"{bucket.name}/set/manifest.csv", b"text,image,label\n")
    Secret(value={"AWS_ENDPOINT_URL": s3_endpoint, "AWS_SECRET_ACCESS_KEY": "testing"}).save(
        "mmpipe-test-storage", overwrite=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing there: only the block's endpoint works
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(Exception, match="check the endpoint"):
        open_source(bucket.url("set/manifest.csv"))
    load_storage_secret(Config(storage_secret="mmpipe-test-storage"))
    assert open_source(bucket.url("set/manifest.csv")).kind == "csv"


def test_a_secret_block_that_is_missing_or_holds_other_things_is_one_line(prefect_api, monkeypatch):
    from prefect.blocks.system import Secret

    with pytest.raises(ConfigError, match="no Secret block named 'mmpipe-nowhere'"):
        load_storage_secret(Config(storage_secret="mmpipe-nowhere"))
    Secret(value={"AWS_ACCESS_KEY_ID": "AKIA-the-key", "PATH": "/tmp/evil"}).save("mmpipe-test-odd", overwrite=True)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unchanged")
    with pytest.raises(StorageError, match="holds PATH, which are not storage variables") as raised:
        load_storage_secret(Config(storage_secret="mmpipe-test-odd"))
    assert "AKIA-the-key" not in str(raised.value)
    import os

    assert os.environ["AWS_ACCESS_KEY_ID"] == "unchanged"  # nothing set when anything is wrong
