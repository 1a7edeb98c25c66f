"""The `mmpipe` command: help without heavy imports, JSON on stdout, one-line errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmpipe.cli import app
from tests.fixtures.cli import run_main

runner = CliRunner()
MMPIPE = str(Path(sys.executable).parent / "mmpipe")  # the installed console script of this environment


@pytest.mark.slow  # a fresh interpreter in a subprocess
def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from mmpipe.cli import app; "
            "heavy = [m for m in ('prefect', 'tensorflow', 'great_expectations', 'pyarrow') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "ingest" in result.stdout and "sample" in result.stdout


def test_ingest_help_teaches_the_options():
    result = runner.invoke(app, ["ingest", "--help"])
    for option in ("--data", "--config", "--json", "--workers", "MMPIPE_"):
        assert option in result.stdout


def test_unusable_source_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    code, out, err = run_main(["ingest", str(tmp_path / "nope.csv"), "--data", str(tmp_path / "d")],
                              monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err


def test_bad_config_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "c.toml").write_text("[image]\nsize = 1\n")
    (tmp_path / "m.csv").write_text("text,image,label\n")
    code, _, err = run_main(["ingest", str(tmp_path / "m.csv"), "--config", str(tmp_path / "c.toml")],
                            monkeypatch, capsys)
    assert code == 2 and "image.size" in err and "Traceback" not in err


def test_sample_refuses_a_non_empty_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "x").write_text("keep me")
    code, _, err = run_main(["sample", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "not an empty folder" in err
    code, _, err = run_main(["sample", str(tmp_path / "x")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err


def test_ingest_json_in_process(prefect_api, sample_manifest, tmp_path):
    result = runner.invoke(app, ["ingest", str(sample_manifest), "--data", str(tmp_path / "d"),
                                 "--config", str(sample_manifest.parent / "mmpipe.toml"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows_read"] == summary["accepted"] + sum(summary["quarantined"].values()) + summary["duplicates"]
    assert summary["classes"] == ["lantern", "moon", "sun", "window"]


@pytest.mark.slow  # runs the installed command in a subprocess
def test_real_command_prints_exactly_one_json_object(prefect_api, tmp_path):
    """The installed command, its own temporary Prefect server, and nothing but JSON on stdout."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    sample = subprocess.run([MMPIPE, "sample", str(tmp_path / "s"), "--rows", "24"], env=env,
                            capture_output=True, text=True, check=True)
    assert "mmpipe ingest" in sample.stdout
    done = subprocess.run(
        [MMPIPE, "ingest", str(tmp_path / "s" / "manifest.csv"), "--config", str(tmp_path / "s" / "mmpipe.toml"),
         "--data", str(tmp_path / "d"), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # the whole of stdout is one object
    assert summary["data_dir"] == str(tmp_path / "d")
    assert (tmp_path / "d" / "dataset.json").is_file()
    assert done.stderr == ""  # nothing from Prefect, GX or anything else on the terminal
    from prefect.settings import get_current_settings

    with_server = {**env, "PREFECT_API_URL": str(get_current_settings().api.url)}  # no second temporary server
    verbose = subprocess.run([MMPIPE, "--verbose", "ingest", str(tmp_path / "s" / "manifest.csv"), "--data",
                              str(tmp_path / "d")], env=with_server, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "Flow run" in verbose.stderr  # --verbose: everything, Prefect included


@pytest.mark.slow(seconds=40)  # a temporary Prefect server, then an ingest stopped halfway
def test_ctrl_c_stops_a_command_and_its_temporary_server_in_one_line(tmp_path):
    """A terminal's Ctrl-C reaches the whole foreground process group: the command stops and says so, and the
    temporary Prefect server stops with it (it once died first, and the command hung retrying to reach it)."""
    import signal
    import time

    import numpy as np
    import psutil
    from PIL import Image

    from tests.deployments.conftest import wait_for

    source = tmp_path / "src"
    source.mkdir()
    noise = np.random.default_rng(5).integers(0, 256, size=(1500, 1500, 3), dtype=np.uint8)
    Image.fromarray(noise).save(source / "big.png", compress_level=1)  # slow to decode: the ingest takes a while
    (source / "m.csv").write_text("text,image,label\n" + "".join(f"row {i},big.png,{'ab'[i % 2]}\n"
                                                                  for i in range(2000)))
    (tmp_path / "mmpipe.toml").write_text("[ingest]\nchunk_rows = 8\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    as_in_a_terminal = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], " \
                       "sys.argv[1:])"  # a test runner's children may ignore SIGINT; a terminal's never do
    with open(tmp_path / "err", "w") as err:
        process = subprocess.Popen([sys.executable, "-c", as_in_a_terminal, MMPIPE, "ingest", str(source / "m.csv"),
                                    "--data", str(tmp_path / "d"), "--config", str(tmp_path / "mmpipe.toml")],
                                   env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_for(lambda: "cleaning chunks" in (tmp_path / "err").read_text(), 120, "the ingest to clean chunks")
        servers = [child for child in psutil.Process(process.pid).children() if "uvicorn" in child.cmdline()]
        assert servers, "no temporary server"
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    err = (tmp_path / "err").read_text()
    assert err.splitlines()[-1] == "mmpipe: interrupted; what was written completely is kept, the rest is redone " \
                                   "next time", err
    deadline = time.monotonic() + 30
    while any(server.is_running() and server.status() != psutil.STATUS_ZOMBIE for server in servers):
        assert time.monotonic() < deadline, "the temporary server outlived the command"
        time.sleep(0.2)


def test_an_internal_error_is_one_line_with_how_to_see_more(tmp_path, monkeypatch, capsys):
    import mmpipe.ingest.sources

    def broken(path):
        raise RuntimeError("something mmpipe did not expect\nwith a second line")

    monkeypatch.setattr(mmpipe.ingest.sources, "open_source", broken)
    code, out, err = run_main(["ingest", str(tmp_path / "m.csv"), "--data", str(tmp_path / "d")], monkeypatch, capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "internal error: RuntimeError: something mmpipe did not expect" in err and "--verbose" in err
    monkeypatch.setenv("MMPIPE_DEBUG", "")  # so that what --verbose sets is undone after the test
    with pytest.raises(RuntimeError, match="did not expect"):  # --verbose: the traceback, for a bug report
        run_main(["--verbose", "ingest", str(tmp_path / "m.csv")], monkeypatch, capsys)


def test_a_prefect_api_lost_mid_command_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    import httpx

    import mmpipe.ingest.sources

    def server_gone(path):
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(mmpipe.ingest.sources, "open_source", server_gone)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setattr("mmpipe.cli.terminal.check_prefect_api", lambda: None)  # it answered when the command began
    code, out, err = run_main(["ingest", str(tmp_path / "m.csv"), "--data", str(tmp_path / "d")], monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "internal error" not in err
    assert "lost the Prefect API at http://127.0.0.1:4200/api (ConnectError" in err and "--resume" in err


def every_command_path(group=None, path=()):
    """Every command and group of `mmpipe`, as the argument lists that reach them."""
    import typer.main

    group = group or typer.main.get_command(app)
    yield list(path)
    for name, command in getattr(group, "commands", {}).items():
        yield from every_command_path(command, (*path, name)) if hasattr(command, "commands") else [[*path, name]]


def test_help_shows_flags_as_flags_not_as_options_with_a_type():
    """Typer 0.29 prints `--json <bool>` as if it took a value; every flag, --help included, shows bare."""
    paths = list(every_command_path())
    assert ["validate"] in paths and ["runs", "list"] in paths and ["contracts", "export"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.stdout and "<bool>" not in result.stdout, (path, result.stdout)
    validate = runner.invoke(app, ["validate", "--help"], terminal_width=200).stdout
    assert "<path>" in validate  # options that take a value still say what kind
    assert re.search(r"--json +Print one JSON object", validate)


@pytest.mark.slow  # a real `mmpipe` process and its temporary Prefect server
def test_a_command_killed_with_9_takes_its_temporary_prefect_server_with_it(sample_manifest, tmp_path):
    import signal
    import time

    import psutil

    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    command = subprocess.Popen([MMPIPE, "ingest", str(sample_manifest), "--data", str(tmp_path / "d")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    servers = []
    while not servers:  # the temporary server: a child running uvicorn
        assert time.monotonic() < deadline and command.poll() is None, "no temporary server was started"
        servers = [child for child in psutil.Process(command.pid).children()
                   if "uvicorn" in " ".join(child.cmdline())]
        time.sleep(0.05)
    command.send_signal(signal.SIGKILL)
    command.wait()
    gone, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive, "the temporary server outlived the command that started it"
