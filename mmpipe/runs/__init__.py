"""The run store: RUNS/<run_id>/ and every file name in it, read-only views over runs, the champion pointer."""
