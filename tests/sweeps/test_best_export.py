"""`mlpsweep best --out DIR` writes its export whole or not at all."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from sweeps.cmd_best import _write_whole


def _earlier(tmp_path, **files: str):
    """DIR holding an earlier export's ``files`` (name → content)."""
    out = tmp_path / "best"
    out.mkdir()
    for name, text in files.items():
        (out / name.replace("_", ".")).write_text(text)
    return out


def _python(script: str, *args) -> subprocess.CompletedProcess:
    """``script`` in an interpreter of its own (its own signals), from the project's root."""
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _half(staged):
    (staged / "model.pt").write_text("new")
    raise OSError(28, "No space left on device")


def test_a_failed_export_leaves_the_earlier_one_whole_and_a_new_folder_gone(tmp_path):
    out = _earlier(tmp_path, model_pt="old", config_json="old")
    with pytest.raises(OSError):
        _write_whole(out, _half)
    assert {p.name: p.read_text() for p in out.iterdir()} == {"model.pt": "old", "config.json": "old"}
    fresh = tmp_path / "fresh" / "and" / "deep"
    with pytest.raises(OSError):
        _write_whole(fresh, _half)
    assert not (tmp_path / "fresh").exists()


def test_a_written_export_replaces_its_files_and_leaves_no_staging_folder(tmp_path):
    out = _earlier(tmp_path, model_pt="old", notes_txt="mine")
    _write_whole(out, lambda staged: (staged / "model.pt").write_text("new"))
    assert {p.name: p.read_text() for p in out.iterdir()} == {"model.pt": "new", "notes.txt": "mine"}


def test_sigterm_midway_leaves_the_earlier_export_whole_and_exits_143(tmp_path):
    """`kill PID` of a `best` writing its export: the staged folder is removed, as for Ctrl+C."""
    out = _earlier(tmp_path, model_pt="old")
    fresh = tmp_path / "fresh" / "deep"
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from sweeps.cmd_best import _write_whole\n"
        "def killed(staged):\n"
        "    (staged / 'model.pt').write_text('new')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        _write_whole(Path(folder), killed)\n"
        "    except SystemExit as exc:\n"
        "        print(exc.code)\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the export\n"
    )
    proc = _python(script, out, fresh)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["143", "143"]
    assert {p.name: p.read_text() for p in out.iterdir()} == {"model.pt": "old"}  # no .mlpsweep-export-*
    assert not (tmp_path / "fresh").exists()


def test_sigterm_during_the_moves_waits_until_the_new_export_is_whole(tmp_path):
    out = _earlier(tmp_path, model_pt="old", config_json="old")
    script = (
        "import os, signal, sys, threading, time\n"
        "from pathlib import Path\n"
        "from sweeps.cmd_best import _write_whole\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # as MLflow's download threads\n"
        "replace = os.replace\n"
        "def replace_once_terminated(src, dst):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # held: delivered once every file is in place\n"
        "    replace(src, dst)\n"
        "os.replace = replace_once_terminated\n"
        "def new(staged):\n"
        "    (staged / 'model.pt').write_text('new')\n"
        "    (staged / 'config.json').write_text('new')\n"
        "_write_whole(Path(sys.argv[1]), new)\n"
        "print('not reached')\n"
    )
    proc = _python(script, out)
    assert proc.returncode == 143, proc.stderr
    assert "not reached" not in proc.stdout and "terminated (SIGTERM)" in proc.stderr
    assert {p.name: p.read_text() for p in out.iterdir()} == {"model.pt": "new", "config.json": "new"}
