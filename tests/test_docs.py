"""The README documents what the code does: reason codes, settings, commands."""

import re
import tomllib
from pathlib import Path

from mmpipe.config import Config, Section
from mmpipe.ingest.reasons import REASON_MEANINGS, Reason

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_reason_code_is_documented_once():
    documented = re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.MULTILINE)
    assert documented == [reason.value for reason in Reason]
    assert set(REASON_MEANINGS) == set(Reason)


def test_the_config_example_shows_every_setting_with_its_default():
    """Every setting is in the example; what is not commented out parses to exactly the default."""
    example = README.split("```toml", 1)[1].split("```", 1)[0]
    shown = tomllib.loads(example)
    defaults = Config().model_dump(mode="json")
    sections = [name for name in Config.model_fields if isinstance(getattr(Config(), name), Section)]
    assert "tracking" in sections and "serve" in sections
    for section in sections:
        for name in type(getattr(Config(), section)).model_fields:
            assert re.search(rf"^#? ?{name} = ", example, flags=re.MULTILINE), f"{section}.{name} missing"
            if name in shown.get(section, {}):
                assert shown[section][name] == defaults[section][name], f"{section}.{name} shows a non-default"
    for name in ("data_dir", "runs_dir", "seed"):
        assert shown[name] == defaults[name]
    assert Config.model_validate(shown) == Config()  # and the example as a whole is the default config


def test_every_suite_parameter_is_documented():
    from mmpipe.contracts.frames import STAT_COLUMNS

    section = README.split("## Data contracts", 1)[1].split("\n## ", 1)[0]
    for name in ("splits", "image_bytes", "text_min_chars", "text_max_chars", "orig_side_max",
                 "min_train_per_class", "split_tolerance", "kl_threshold", "reference_label_partition"):
        assert f"`{name}`" in section
    assert all(f"`{column}`" in section for column in STAT_COLUMNS)


def test_quick_start_has_exactly_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick_start)
    assert len(commands) == 2
    assert commands[0].endswith("mmpipe demo") and commands[1].endswith("pytest")


def test_every_command_in_the_command_table_exists_and_teaches_its_options():
    from typer.testing import CliRunner

    from mmpipe.cli import app

    table = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\| `mmpipe ([a-z -]+?)(?: \[| [A-Z]|`)", table, flags=re.MULTILINE)
    assert len(commands) >= 15
    for command in commands:
        words = command.split()
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0 and "Usage: mmpipe " + " ".join(words) in result.stdout, command
        options = re.findall(r"--[a-z-]+", table.split(f"`mmpipe {command}", 1)[1].split("|", 1)[0])
        assert all(option in result.stdout for option in options), (command, options)


def _listed(label: str) -> list[str]:
    """The column names README lists after `* **LABEL**:` (types in brackets dropped)."""
    text = " ".join(README.split())
    listed = text.split(f"* **{label}**: `", 1)[1].split("`", 1)[0]
    return [re.sub(r" \(.*\)$", "", name.strip()) for name in listed.split(",")]


def test_the_shard_and_quarantine_column_lists_are_the_schemas():
    from mmpipe.ingest.schema import QUARANTINE_SCHEMA, shard_schema

    assert _listed("Shard columns") == shard_schema(8).names
    assert _listed("Quarantine columns") == QUARANTINE_SCHEMA.names


def test_the_readme_numbers_are_the_ones_docs_benchmarks_md_measured():
    """A number the README quotes from a benchmark is the one the benchmark last wrote."""
    text = " ".join(README.split())
    bench = " ".join((Path(__file__).parents[1] / "docs" / "benchmarks.md").read_text(encoding="utf-8").split())
    python_rows, image_rows = re.search(r"2 threads \d+: ([\d.]+)x; on the image-bound rows, ([\d.]+)x", bench).groups()
    assert f"image-bound rows (processes {image_rows}x); processes clean {python_rows}x as many rows" in text
    demo = re.search(r"\| default \| fused \|[^|]*\|[^|]*\|[^|]*\| (\d+) of (\d+) \((\d+)\) \| ([\d.]+) \|",
                     bench.split("**demo**", 1)[1])
    stopped, cap, kept, accuracy = demo.groups()
    assert f"with {accuracy} test accuracy" in text
    assert f"ended training at epoch {stopped} of its {cap} and kept epoch {kept}" in text
    ratio = re.search(r"data dir local \| \d+ \| ([\d.]+)x \|", bench).group(1)
    assert f"ingest from the bucket runs at {ratio}x of the same files on local disk" in text
