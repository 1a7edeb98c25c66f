import csv

from PIL import Image

from mmpipe.files import sha256_file
from mmpipe.sample import CLASSES, SampleSpec, write_sample


def test_sample_is_deterministic_and_varied(tmp_path):
    spec = SampleSpec(rows=30, seed=5, min_side=8, max_side=24)
    first = write_sample(tmp_path / "a", spec)
    second = write_sample(tmp_path / "b", spec)
    assert first.read_text() == second.read_text()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert all(sha256_file(tmp_path / "a" / "images" / n) == sha256_file(tmp_path / "b" / "images" / n)
               for n in names)
    with open(first, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["label"] for row in rows} <= set(CLASSES.values()) | {"", *(f"{c}s" for c in CLASSES.values())}
    formats, modes = set(), set()
    for name in names:
        try:
            with Image.open(tmp_path / "a" / "images" / name) as image:
                formats.add(image.format)
                modes.add(image.mode)
        except OSError:
            continue  # the injected empty / truncated / HTML files
    assert formats >= {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    assert modes >= {"RGB", "L", "RGBA", "P", "CMYK", "LA"}
    assert "classes" in (tmp_path / "a" / "mmpipe.toml").read_text()


def test_the_demo_sample_carries_its_image_size_to_the_run(tmp_path):
    from mmpipe.config import load_config
    from mmpipe.sample import DEMO

    write_sample(tmp_path / "demo", SampleSpec(rows=8, seed=0, min_side=DEMO.min_side, max_side=DEMO.max_side,
                                               image_size=DEMO.image_size))
    config = load_config(tmp_path / "demo" / "mmpipe.toml", {}, environ={})
    assert config.image.size == DEMO.image_size == 32 and config.ingest.classes == sorted(CLASSES.values())
    for image in (tmp_path / "demo" / "images").iterdir():
        try:
            with Image.open(image) as opened:
                assert min(opened.size) >= DEMO.min_side  # no shape squeezed to a few pixels
        except OSError:
            continue  # the injected faults
    assert "[image]" not in (write_sample(tmp_path / "plain", SampleSpec(rows=8)).parent / "mmpipe.toml").read_text()
