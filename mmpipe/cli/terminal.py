"""The Prefect API a command will talk to, checked before it starts (what reaches the terminal is
mmpipe.native_logs.configure_stderr's)."""

from __future__ import annotations

import os


def check_prefect_api() -> None:
    """When PREFECT_API_URL is set, fail in one line (and a second) if nothing answers there."""
    from mmpipe.errors import MmpipeError

    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        return
    import httpx

    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise MmpipeError(f"cannot reach the Prefect API at {url} ({type(error).__name__}: {error}): start it "
                          "(`prefect server start`), fix PREFECT_API_URL, or unset it to use a temporary server"
                          ) from None
