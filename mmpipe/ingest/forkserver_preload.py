"""Imported only by the chunk workers' forkserver (mmpipe.ingest.workers), never by anything else: the cleaning
code, loaded once for every worker, and Ctrl-C ignored from the first instruction of each worker on.

A worker is forked with the signal handlers its forkserver had after these imports. Set later, in the pool's
initializer, SIG_IGN left a window (the worker's start-up) in which the terminal's Ctrl-C, sent to the whole
process group, killed a worker mid-start and left the parent waiting on a pool that would never finish.
"""

import signal

import mmpipe.ingest.chunks  # noqa: F401 - loaded here once, so every forked worker starts with it

signal.signal(signal.SIGINT, signal.SIG_IGN)
