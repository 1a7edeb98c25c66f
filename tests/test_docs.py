"""The README documents what the code does: reason codes, settings, commands."""

import re
from pathlib import Path

from mmpipe.config import Config
from mmpipe.ingest.reasons import REASON_MEANINGS, Reason

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_reason_code_is_documented_once():
    documented = re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.MULTILINE)
    assert documented == [reason.value for reason in Reason]
    assert set(REASON_MEANINGS) == set(Reason)


def test_every_setting_appears_in_the_config_example():
    example = README.split("```toml", 1)[1].split("```", 1)[0]
    for section in ("text", "image", "ingest", "contracts", "model", "train", "evaluate", "serve"):
        for name in type(getattr(Config(), section)).model_fields:
            assert re.search(rf"^#? ?{name} = ", example, flags=re.MULTILINE), f"{section}.{name} missing"


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
