"""New data, announced: the `mmpipe.source.changed` event that the `on-new-data` deployment's trigger waits for.

The watcher is not a flow (a flow run per poll buried the real runs in the UI): `mmpipe serve` runs
`mmpipe.ingest.watch.watch_sources` in a thread, `mmpipe watch` in its own process, and both hand each
settled change to `announce_change`. The event shows in the UI's Event Feed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prefect.events import emit_event

from mmpipe.config import Config
from mmpipe.ingest.watch import source_key, watch_sources
from mmpipe.storage.urls import absolute

SOURCE_CHANGED = "mmpipe.source.changed"


def source_resource(source: str, kind: str = "train") -> dict[str, str]:
    """The event's resource: one stable id per source, so triggers and the UI can tell sources apart; data to
    score is `mmpipe.scored.<hash>`, so the retraining trigger (`mmpipe.source.*`) never fires on it."""
    space = "scored" if kind == "score" else "source"
    return {"prefect.resource.id": f"mmpipe.{space}.{source_key(source)}",
            "prefect.resource.name": str(absolute(source))}


def announce_change(change: dict) -> None:
    """Emit `mmpipe.source.changed` for one settled change (the summary from `poll` is the payload)."""
    emit_event(event=SOURCE_CHANGED, resource=source_resource(change["source"], change.get("kind", "train")),
               payload=change)


def watch_and_announce(config: Config, stop: threading.Event, say: Callable[[str], object]) -> None:
    """Watch the configured sources until `stop` is set: an event per settled change, and a line to `say` about it
    (or about a source that cannot be read)."""

    def announce(change: dict) -> None:
        announce_change(change)
        what = "pending, no run completed it: announced again" if change.get("again") else (
            f"{change['added']} added, {change['changed']} changed, {change['removed']} removed")
        to_score = " (to score)" if change.get("kind") == "score" else ""
        say(f"{change['source']}{to_score}: {what} -> emitted {SOURCE_CHANGED}")

    def complain(source: str, error: Exception) -> None:
        say(f"{source}: cannot look at it ({error}); trying again in {config.serve.watch_interval_s:g} s")

    watch_sources(config, announce, stop, complain)
