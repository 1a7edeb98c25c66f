import ast
import shutil
from pathlib import Path

import mmpipe.ingest.chunks as chunks_module
from mmpipe.ingest.chunks import CLEANING_CODE, code_fingerprint, plan_chunks, process_chunk
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.sources import open_source
from tests.fixtures.datasets import make_config
from tests.fixtures.files import gradient, save, write_manifest_csv


def manifest_with(tmp_path, texts):
    if not (tmp_path / "a.png").exists():
        save(gradient(), tmp_path / "a.png", "PNG")
    return write_manifest_csv(tmp_path / "m.csv", [{"text": t, "image": "a.png", "label": "x"} for t in texts])


def keys(tmp_path, texts, chunk_rows=8):
    source = open_source(manifest_with(tmp_path, texts))
    return [plan.key for plan in plan_chunks(source, tmp_path / "cache", "settings", chunk_rows)]


def test_inserting_a_row_disturbs_only_its_chunk(tmp_path):
    texts = [f"row {n}" for n in range(400)]
    before = keys(tmp_path, texts)
    after = keys(tmp_path, texts[:200] + ["inserted"] + texts[200:])
    assert len(before) > 10
    assert len(set(before) - set(after)) <= 2  # the chunk it landed in (and at most one neighbour)


def test_chunk_sizes_are_bounded(tmp_path):
    source = open_source(manifest_with(tmp_path, [f"r{n}" for n in range(500)]))
    plans = plan_chunks(source, tmp_path / "cache", "settings", 8)
    assert sum(plan.rows for plan in plans) == 500
    assert all(plan.rows <= 32 for plan in plans)
    assert all(plan.rows >= 2 for plan in plans[:-1])


def test_touching_an_image_changes_the_fingerprint(tmp_path):
    import os

    first = keys(tmp_path, ["a", "b"])
    stat = (tmp_path / "a.png").stat()
    os.utime(tmp_path / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert keys(tmp_path, ["a", "b"]) != first


def test_processed_chunk_is_reused(tmp_path):
    source = open_source(manifest_with(tmp_path, ["a", "b", "c"]))
    (plan,) = plan_chunks(source, tmp_path / "cache", "settings", 64)  # 3 rows: under the smallest chunk
    config = make_config(tmp_path / "data")
    location = SourceLocation(source.base_dir, source.root)
    first = process_chunk(plan, location, config, tmp_path / "cache")
    second = process_chunk(plan, location, config, tmp_path / "cache")
    assert not first.cached and second.cached
    assert (second.rows, second.rejected) == (first.rows, first.rejected) == (3, 0)


def test_the_code_fingerprint_follows_the_cleaning_code(tmp_path):
    package = Path(chunks_module.__file__).parent
    copy = tmp_path / "ingest"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_fingerprint(copy) == code_fingerprint()
    # Every ingest module the row judge (clean/) imports, directly or not, is part of the fingerprint.
    fingerprinted = {path.relative_to(package) for pattern in CLEANING_CODE for path in package.glob(pattern)}
    pending, seen = [package / "clean" / "record.py"], set()
    while pending:
        path = pending.pop()
        seen.add(path.relative_to(package))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmpipe.ingest."):
                target = package.joinpath(*node.module.split(".")[2:])
                target = target / "__init__.py" if target.is_dir() else target.with_suffix(".py")
                if target.relative_to(package) not in seen:
                    pending.append(target)
    assert seen <= fingerprinted, seen - fingerprinted
    for name in ("clean/text.py", "split.py", "reasons.py"):
        changed = tmp_path / name.replace("/", "-")
        shutil.copytree(copy, changed)
        with open(changed / name, "a") as handle:
            handle.write("\n# a change\n")
        assert code_fingerprint(changed) != code_fingerprint(copy), name
