"""Importing the service's modules changes nothing in the process: library settings, the
temporary directory and the DICOM listener's behaviour are set explicitly, when a listener or
a command starts."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, logging, pkgutil, importlib, tempfile
import pydicom.config as pdc
from pynetdicom import _config as pnc, dimse_messages

def state():
    return {
        "tempdir": tempfile.tempdir,
        "pydicom_reading": pdc.settings.reading_validation_mode,
        "pynetdicom": [pnc.STORE_RECV_CHUNKED_DATASET, pnc.UNRESTRICTED_STORAGE_SERVICE,
                       pnc.LOG_REQUEST_IDENTIFIERS, pnc.LOG_RESPONSE_IDENTIFIERS],
        "pynetdicom_log": logging.getLogger("pynetdicom").level,
        "temporary_file": dimse_messages.NamedTemporaryFile.__module__,
    }

before = state()
names = []
for package in ("core", "agent"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({"before": before, "after": state(), "modules": names}))
"""


def test_importing_core_and_agent_changes_no_process_setting():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "agent.listener" in report["modules"] and "agent.diskguard" in report["modules"]
    assert report["after"] == report["before"]


def test_a_listener_receives_into_its_own_folder_without_touching_tempdir(tmp_path):
    import tempfile

    from agent.listener import Listener
    from agent.store import StudyStore
    from core.config import Config

    before = tempfile.tempdir
    first = Listener(Config(data_dir=tmp_path / "a", port=0), StudyStore(tmp_path / "a"), index=None)
    second = Listener(Config(data_dir=tmp_path / "b", port=0), StudyStore(tmp_path / "b"), index=None)
    assert tempfile.tempdir == before
    assert first.incoming.directory != second.incoming.directory
    assert first.ae._pt_incoming is first.incoming and second.ae._pt_incoming is second.incoming
