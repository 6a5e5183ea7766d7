"""Bad command-line flags and stores: one line naming the flag, exit 2, nothing started or created."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import sweeps.cmd_run
from conftest import free_port, write_spec
from models.data import load_dataset
from sweeps.cli import main


@pytest.fixture
def here(tmp_path, monkeypatch):
    """An empty working folder; a run that gets past its checks fails the test at once."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def started(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(sweeps.cmd_run, "execute", started)
    return tmp_path


def only_error(capsys, command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlpsweep {command}: error: "), lines
    return lines[0][len(f"mlpsweep {command}: error: "):]


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("flags, message", [
    (["--run-cap", "200000"], "--run-cap: must be <= 100000, got 200000"),
    (["--concurrency", "5000"], "--concurrency: must be <= 1024, got 5000"),
    (["--storage", "redis://localhost/0"], "--storage: 'redis://localhost/0' is neither a database URL"),
    (["--storage", "postgresql://nobody@127.0.0.1:{port}/db"],
     "--storage: cannot connect to postgresql://nobody@127.0.0.1:{port}/db: "),
    (["--tracking-uri", "postgresql://nobody:secret@127.0.0.1:{port}/db"],
     "--tracking-uri: cannot connect to postgresql://nobody:***@127.0.0.1:{port}/db: "),
    (["--tracking-uri", "sqlite:///{here}/missing/mlflow.db"],
     "--tracking-uri: the folder {here}/missing does not exist; create it first or fix the path"),
    (["--storage", "{here}/missing/optuna.journal"], "--storage: the folder {here}/missing does not exist"),
    (["--storage", "sqlite:///{here}"], "--storage: {here} is a folder"),
])
def test_run_refuses_bad_flags_before_anything_starts(here, capsys, flags, message):
    spec = write_spec(here, name="flags")
    port = free_port()  # nothing listens there: refused at once

    def fill(text: str) -> str:
        return text.format(port=port, here=here)

    assert main(["run", str(spec), "--quiet", *map(fill, flags)]) == 2
    assert only_error(capsys, "run").startswith(fill(message))
    assert files(here) == ["flags.yaml"]
    assert not (here / "missing").exists()


def test_submit_applies_the_spec_limits_to_its_flags_too(here, capsys):
    spec = write_spec(here, name="flags")
    assert main(["submit", str(spec), "--address", "http://127.0.0.1:1", "--run-cap", "100001"]) == 2
    assert only_error(capsys, "submit") == "--run-cap: must be <= 100000, got 100001"
    assert main(["submit", str(spec), "--address", "http://127.0.0.1:1", "--concurrency", "1025"]) == 2
    assert only_error(capsys, "submit") == "--concurrency: must be <= 1024, got 1025"


@pytest.mark.parametrize("command", [["status", "nosuch"], ["report", "nosuch"], ["best", "nosuch", "--out", "o"]])
def test_reading_commands_create_no_store(here, capsys, command):
    assert main(command) == 2
    error = only_error(capsys, command[0])
    assert error.startswith("NAME: no sweep 'nosuch'") or error.startswith("--tracking-uri: no MLflow store at")
    assert files(here) == []


@pytest.mark.parametrize("held, named", [
    ({"config.json": '{"sweep": "older", "trial": 7}', "model.pt": "weights"}, "an export (sweep 'older', trial 7)"),
    ({"model.pt": "weights"}, "model.pt, which an export would replace"),
    ({"config.json": '{"lr": 3}'}, "config.json, which an export would replace"),
])
def test_best_will_not_write_over_an_earlier_export(here, capsys, held, named):
    out = here / "exported"
    out.mkdir()
    for name, text in held.items():
        (out / name).write_text(text)
    assert main(["best", "nosuch", "--out", "exported"]) == 2  # refused before any store is read
    assert only_error(capsys, "best") == (f"--out: exported already holds {named}; pass --force to "
                                          "replace it, or name another folder")
    assert {p.name: p.read_text() for p in out.iterdir()} == held and files(here) == ["exported"]
    assert main(["best", "nosuch", "--out", "exported", "--force"]) == 2  # --force goes on to the store
    assert only_error(capsys, "best").startswith(("NAME: no sweep 'nosuch'", "--tracking-uri: no MLflow store at"))


def test_a_reading_command_names_the_store_it_cannot_reach(here, capsys):
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/db"
    assert main(["status", "s", "--storage", url]) == 2
    assert only_error(capsys, "status").startswith(f"--storage: cannot connect to {url}: ")
    assert main(["status", "s", "--storage", "sqlite:///absent.db"]) == 2  # reading never creates it
    assert only_error(capsys, "status") == "--storage: absent.db does not exist; pass the --storage the sweep used"
    assert files(here) == []


@pytest.mark.parametrize("top", ["0", "-2"])
def test_status_top_must_be_positive(here, capsys, top):
    with pytest.raises(SystemExit) as stop:
        main(["status", "s", "--top", top])
    assert stop.value.code == 2
    assert only_error(capsys, "status") == f"argument --top: must be >= 1, got {top} (see 'mlpsweep status --help')"


@pytest.mark.parametrize("argv, prog, message", [
    ([], "mlpsweep", "the following arguments are required: COMMAND"),
    (["rnu"], "mlpsweep", "argument COMMAND: invalid choice: 'rnu' (choose from 'run', "),
    (["run"], "mlpsweep run", "the following arguments are required: SPEC"),
    (["run", "s.yaml", "--concurency", "2"], "mlpsweep run", "unrecognized arguments: --concurency 2 (did you mean --concurrency?)"),
    (["status", "s", "--bogus"], "mlpsweep status", "unrecognized arguments: --bogus"),
    (["run", "s.yaml", "--run-cap", "ten"], "mlpsweep run", "argument --run-cap: must be a positive integer, got 'ten'"),
    (["verify", "--activation", "tanh"], "mlpsweep verify", "the following arguments are required: --sizes"),
])
def test_a_bad_flag_is_one_line_naming_it_and_where_the_usage_is(here, capsys, argv, prog, message):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # no usage block before it
    assert err.startswith(f"{prog}: error: {message}") and err.endswith(f" (see '{prog} --help')\n"), err
    assert files(here) == []


@pytest.mark.parametrize("command", ["best", "report"])
@pytest.mark.parametrize("out, message", [
    ("", "--out: give a folder name"),
    ("a-file", "--out: a-file exists and is not a folder"),
    ("a-file/sub", "--out: cannot make a folder under a-file: it is a file"),
])
def test_out_is_checked_before_anything_is_read(here, capsys, command, out, message):
    (here / "a-file").write_text("keep me")
    assert main([command, "s", "--out", out]) == 2
    assert only_error(capsys, command) == message
    assert files(here) == ["a-file"] and (here / "a-file").read_text() == "keep me"


@pytest.mark.parametrize("flags, message", [
    (["--sizes", "2,100000,1"], "--sizes: entry 2 of '2,100000,1' is 100000; a layer has at most 4096 units"),
    (["--sizes", ",".join(["1"] + ["2"] * 17 + ["1"])], "--sizes: got 17 hidden layers; at most 16"),
    (["--sizes", "2,3,1", "--samples", "10001"], "--samples: got 10001; expected an integer >= 1 and <= 10000"),
])
def test_verify_refuses_what_would_not_fit_in_memory(here, capsys, flags, message):
    assert main(["verify", *flags, "--activation", "tanh"]) == 2
    assert only_error(capsys, "verify") == message


def test_validate_checks_the_data_file_as_run_does(here, capsys):
    spec = write_spec(here, name="v", text="name: v\nmethod: random\ndata: {dataset: nothere.csv}\n"
                                           "parameters:\n  width: {value: 4}\n")
    assert main(["validate", str(spec)]) == 2
    assert only_error(capsys, "validate") == (f"data.dataset: file not found: nothere.csv (a relative path is read "
                                              f"from the current folder, {here})")


def test_a_data_file_that_is_no_npz_says_so(tmp_path):
    text, folder, arrays = tmp_path / "text.npz", tmp_path / "dir.npz", tmp_path / "objects.npz"
    text.write_text("x,y\n1,2\n")
    folder.mkdir()
    np.savez(arrays, a=np.array([{"x": 1}, None], dtype=object), b=np.arange(2.0))
    assert zipfile.is_zipfile(arrays)
    with pytest.raises(ValueError, match=r"^data\.dataset: text\.npz is not an \.npz file \(a zip of \.npy arrays"):
        load_dataset(text)
    with pytest.raises(ValueError, match=r"^data\.dataset: .*dir\.npz is a folder, not a data file$"):
        load_dataset(folder)
    with pytest.raises(ValueError, match=r"^data\.dataset: cannot read objects\.npz as \.npz: it holds pickled objects, "
                                         r"which are refused"):
        load_dataset(arrays)


def test_version_is_the_installed_package_s(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"mlpsweep {version('mlpsweep')}\n"


@pytest.mark.parametrize("address, message", [
    ("bogus", "--ray-address: cannot join a Ray cluster at 'bogus': Invalid address format"),
    ("127.0.0.1:{port}", "--ray-address: no Ray cluster answers at 127.0.0.1:{port}: Connection refused (give auto, "),
    ("ray://127.0.0.1:{port}", "--ray-address: no Ray cluster answers at ray://127.0.0.1:{port}: Connection refused"),
])
def test_a_ray_address_where_no_cluster_answers_is_refused_before_anything_starts(here, capsys, address, message):
    # Ray itself would retry a silent GCS address for minutes, after the stores were made
    spec = write_spec(here, name="ray")
    port = free_port()
    assert main(["run", str(spec), "--quiet", "--ray-address", address.format(port=port)]) == 2
    assert only_error(capsys, "run").startswith(message.format(port=port))
    assert files(here) == ["ray.yaml"]


def test_auto_where_ray_address_names_a_silent_cluster_is_refused_in_seconds(here, capsys, monkeypatch):
    # Ray would wait minutes on it. (A crashed cluster's leftover record takes the same path, but
    # Ray prefers any one Ray running on the machine to the record: not testable beside others.)
    import time

    spec = write_spec(here, name="ray")
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    started = time.monotonic()
    assert main(["run", str(spec), "--quiet", "--ray-address", "auto"]) == 2
    assert time.monotonic() - started < 30
    assert only_error(capsys, "run") == (
        f"--ray-address: no Ray cluster answers at auto (127.0.0.1:{port}, from $RAY_ADDRESS): Connection refused "
        "(start that cluster, or give --ray-address HOST:PORT of a running one, or leave it out for a local Ray)")
    assert files(here) == ["ray.yaml"]


def test_the_dashboard_line_is_a_server_s_address_or_this_install_s_mlflow_ui(monkeypatch, tmp_path):
    from sweeps.console import dashboard_line

    assert dashboard_line("http://10.0.0.5:5000/", "s") == "Dashboard: http://10.0.0.5:5000   (experiment 's')"
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    (python.parent / "mlflow").write_text("")
    monkeypatch.setattr("sys.executable", str(python))
    monkeypatch.setenv("PATH", "/nonexistent")  # the venv is not activated: its mlflow by path
    assert dashboard_line("sqlite:///mlflow.db", "s") == (
        f"Dashboard: {python.parent / 'mlflow'} ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1   (experiment 's')")


def test_verify_refuses_a_store_in_a_folder_that_does_not_exist(here, capsys):
    uri = f"sqlite:///{here}/missing/v.db"
    assert main(["verify", "--sizes", "2,3,1", "--activation", "tanh", "--tracking-uri", uri]) == 2
    assert only_error(capsys, "verify") == (f"--tracking-uri: the folder {here}/missing does not exist; "
                                            "create it first or fix the path")
    assert files(here) == []


def test_more_trials_at_once_than_cores_is_a_warning_before_a_local_run(here, capsys, monkeypatch):
    spec = write_spec(here, name="wide")

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(sweeps.cmd_run, "execute", started)
    monkeypatch.setattr(sweeps.cmd_run.os, "cpu_count", lambda: 2)
    for concurrency, warned in (("3", True), ("2", False)):
        with pytest.raises(Started):  # the run goes ahead as asked
            main(["run", str(spec), "--quiet", "--concurrency", concurrency])
        err = capsys.readouterr().err
        assert ("mlpsweep run: warning: concurrency: 3 trials at once on this machine's 2 CPU cores" in err) is warned
        assert "--concurrency 2 here" in err if warned else err == ""
    with pytest.raises(Started):  # a cluster's cores are not this machine's: no word (none answers: no join)
        monkeypatch.setattr(sweeps.cmd_run, "join_cluster", lambda address: None)
        main(["run", str(spec), "--quiet", "--concurrency", "3", "--ray-address", "127.0.0.1:1"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_ray_address_where_another_service_answers_is_refused_in_seconds(here, capsys, web_server, scheme):
    # before: Ray retried a GCS address for minutes (still waiting at 120 s), its client 30 s
    import time

    spec = write_spec(here, name="ray")
    address = f"{scheme}127.0.0.1:{web_server}"
    started = time.monotonic()
    assert main(["run", str(spec), "--quiet", "--ray-address", address]) == 2
    assert time.monotonic() - started < 20
    assert only_error(capsys, "run").startswith(
        f"--ray-address: no Ray cluster answers at {address}: something listens there but speaks no gRPC")
    assert files(here) == ["ray.yaml"]


def test_speaks_grpc_tells_a_grpc_server_from_another_service(web_server, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert sweeps.cmd_run.speaks_grpc("127.0.0.1", port, timeout=5)
        assert not sweeps.cmd_run.speaks_grpc("127.0.0.1", web_server, timeout=1)
        monkeypatch.setenv("RAY_USE_TLS", "1")  # a TLS cluster is left to Ray's own handshake
        assert sweeps.cmd_run.speaks_grpc("127.0.0.1", web_server, timeout=1)
    finally:
        server.stop(None)


@pytest.mark.parametrize("flag", ["--tracking-uri", "--storage"])
def test_a_sqlite_file_that_is_no_database_is_refused_before_anything_starts(here, capsys, flag):
    # MLflow retried such a file for ~100 s (with WAL's pragmas on) before its error, Ray started
    (here / "junk.db").write_bytes(b"these are not the bytes of a database\n")
    spec = write_spec(here, name="junk")
    assert main(["run", str(spec), "--quiet", flag, f"sqlite:///{here}/junk.db"]) == 2
    assert only_error(capsys, "run") == (f"{flag}: {here}/junk.db is not a SQLite database (it does not start as "
                                         f"one); pass the {flag} the sweep used, or move that file away")
    assert files(here) == ["junk.db", "junk.yaml"]
    (here / "empty.db").write_bytes(b"")  # SQLite makes a database of an empty file: not refused here
    with pytest.raises(AssertionError, match="the run started"):
        main(["run", str(spec), "--quiet", flag, f"sqlite:///{here}/empty.db"])
