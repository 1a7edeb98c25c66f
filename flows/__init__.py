"""Prefect flows: thin wiring over the mmpipe core, one module per flow."""

import os

from mmpipe.config import ENV_DEBUG
from mmpipe.native_logs import filter_native_stderr

# A flow run started by a worker or `mmpipe serve` is a process of its own (Prefect gives it PREFECT__FLOW_RUN_ID),
# whose stderr is the worker's output: TensorFlow's C++ lines are kept off it as the mmpipe command keeps them off
# a terminal. Every log line of the run still reaches the Prefect API; MMPIPE_DEBUG=1 leaves stderr as it is.
if os.environ.get("PREFECT__FLOW_RUN_ID") and not os.environ.get(ENV_DEBUG):
    filter_native_stderr()
