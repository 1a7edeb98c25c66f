"""How counts read in what people see (CLI lines, flow logs, artifacts, pages): `1 row`, `2 rows`."""

from __future__ import annotations

# Nouns mmpipe counts whose plural the spelling rule gets wrong ("ch" said as k).
_IRREGULAR = {"epoch": "epochs"}


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """`count` with its noun in the right number: `1 class`, `2 classes`, `0 rows` (`plural` for irregular nouns)."""
    if count == 1:
        return f"{count} {singular}"
    if plural is None:
        plural = _IRREGULAR.get(singular) or singular + ("es" if singular.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{count} {plural}"


def first_line(error: BaseException, limit: int = 200) -> str:
    """What an error says, on one line: its first line (cut at `limit`), or its type's name when it says nothing.
    Library errors (Keras, TensorFlow, Arrow) often say more on lines a one-line message cannot show."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
