"""What a run records about where it ran: mmpipe's own commit (not the working directory's) and the machine."""

import subprocess
from pathlib import Path

from mmpipe.train.provenance import git_commit, machine

ROOT = Path(__file__).resolve().parents[2]


def test_the_commit_is_mmpipes_own_whatever_the_working_directory(tmp_path, monkeypatch):
    own = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # a user's project, another repository
    monkeypatch.chdir(tmp_path)
    assert git_commit() == own and len(own) == 40


def test_the_machine_names_its_cpu_flags_and_thread_settings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    found = machine()
    assert found["cpu"] and found["cpu_count"] >= 1 and isinstance(found["cpu_flags"], list)
    assert found["environment"]["OMP_NUM_THREADS"] == "2"
    assert {"intra_op_threads", "inter_op_threads"} <= set(found)
