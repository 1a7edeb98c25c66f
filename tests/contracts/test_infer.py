"""The invariant of inferred contracts: they always pass on the data they were inferred from.

Generated through real ingest, real GX and the real suites, over the shapes real datasets take:
skewed classes, classes with 1-3 rows, several captions per image, one caption on several images,
empty texts (allowed), one class only, CSV and JSONL manifests.
"""

import shutil

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmpipe.config import SPLITS
from mmpipe.contracts.suites import SOURCE_SUITES_DIR
from mmpipe.contracts.validate import validate_dataset
from mmpipe.ingest import ingest
from tests.fixtures.datasets import make_config
from tests.fixtures.files import distinct_images, write_manifest

CLASS_NAMES = ["document-open", "grinning_face", "Straße", "a b c", "x", "99", "ünïcode"]
# What may be true only by luck on a version: these are warnings in inferred suites, never failures.
LUCK = {"every class has enough train examples", "split shares close to the configured ratios",
        "each image in one split"}


@st.composite
def datasets(draw):
    classes = draw(st.lists(st.sampled_from(CLASS_NAMES), min_size=1, max_size=4, unique=True))
    sizes = [draw(st.one_of(st.integers(1, 3), st.integers(4, 40))) for _ in classes]  # skewed, some tiny
    captions_per_image = draw(st.integers(1, 4))
    text_mode = draw(st.sampled_from(["captions", "empty", "shared", "long"]))
    return {"classes": classes, "sizes": sizes, "captions_per_image": captions_per_image, "text_mode": text_mode,
            "format": draw(st.sampled_from([".csv", ".jsonl"])), "seed": draw(st.integers(0, 10_000))}


def build(spec, root):
    rows_needed = sum(spec["sizes"])
    per_image = spec["captions_per_image"]
    images = distinct_images(root / "images", -(-rows_needed // per_image) + len(spec["classes"]), spec["seed"])
    rows, image_index = [], 0
    for label, size in zip(spec["classes"], spec["sizes"], strict=True):
        for n in range(size):
            if n % per_image == 0:
                image_index += 1  # an image belongs to one class: its captions share its label
            text = {"captions": f"{label} caption {n}", "empty": "", "shared": f"shared text {n % 3}",
                    "long": "word " * (50 + n)}[spec["text_mode"]]
            rows.append({"text": text, "image": f"images/{images[image_index]}", "label": label})
    return write_manifest(root / f"manifest{spec['format']}", rows), len({(r["image"], r["text"]) for r in rows})


@pytest.mark.slow  # 25 generated datasets through real ingest and GX
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(spec=datasets())
def test_inferred_suites_pass_on_the_version_they_came_from(spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    manifest, distinct_pairs = build(spec, root)
    config = make_config(root / "data", **{"text.allow_empty": spec["text_mode"] == "empty",
                                           "ingest.workers": 1, "image.size": 8})
    version = ingest(manifest, config)
    # A repeated (image, text) pair is a duplicate, whatever else differs.
    assert version.accepted == distinct_pairs, version.quarantined
    assert version.duplicates == sum(spec["sizes"]) - distinct_pairs
    assume(all(version.splits[split] for split in SPLITS))  # else the project suites rightly fail
    first = validate_dataset(config.data_dir, config)
    assert first.success, first.failure_message()
    assert first.inferred and (config.data_dir / SOURCE_SUITES_DIR / "shards.json").is_file()
    assert not [o for o in first.outcomes if str(o.observed).startswith("error:")]
    assert {o.expectation for o in first.warnings} <= LUCK, [(o.expectation, o.observed) for o in first.warnings]
    # From scratch, with the suites read back from disk: the same verdict, and nothing inferred again.
    shutil.rmtree(config.data_dir / "validation")
    again = validate_dataset(config.data_dir, config)
    assert again.success and not again.inferred and not again.reused
    assert {o.expectation for o in again.warnings} == {o.expectation for o in first.warnings}


def test_a_version_missing_a_split_fails_the_project_suites_with_what_to_do(tmp_path):
    images = distinct_images(tmp_path / "src" / "images", 1, seed=3)
    rows = [{"text": f"caption {n}", "image": f"images/{images[0]}", "label": "only"} for n in range(12)]
    config = make_config(tmp_path / "data")
    ingest(write_manifest(tmp_path / "src" / "m.csv", rows), config)
    report = validate_dataset(config.data_dir, config)
    assert not report.success and not report.inferred
    outcome = next(o for o in report.failed if o.expectation == "every split present")
    assert "group" in outcome.hint and "split" in outcome.hint
