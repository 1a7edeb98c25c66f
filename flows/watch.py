"""The watch flow: look at each source; emit `mmpipe.source.changed` once new files have settled."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.events import emit_event

from mmpipe.config import Config
from mmpipe.ingest.watch import poll, source_key

SOURCE_CHANGED = "mmpipe.source.changed"


def source_resource(source: str) -> dict[str, str]:
    """The event's resource: one stable id per source, so triggers and the UI can tell sources apart."""
    return {"prefect.resource.id": f"mmpipe.source.{source_key(Path(source))}",
            "prefect.resource.name": str(Path(source).absolute())}


@flow(name="watch")
def watch_flow(config: Config) -> list[dict]:
    """Poll every configured source; an event per source whose files changed and settled."""
    logger = get_run_logger()
    changes = []
    for source in (entry.path for entry in config.serve.sources):
        status, change = poll(Path(source), Path(config.data_dir), exclude=(Path(config.runs_dir),))
        if change is None:
            logger.info("%s: %s", source, "files still arriving, waiting for them to settle"
                        if status == "arriving" else "nothing new")
            continue
        emit_event(event=SOURCE_CHANGED, resource=source_resource(source), payload=change)
        logger.info("%s changed: %d added, %d changed, %d removed; emitted %s", source, change["added"],
                    change["changed"], change["removed"], SOURCE_CHANGED)
        changes.append(change)
    return changes
