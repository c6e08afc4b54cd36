"""Outgoing associations send each PDU at once (TCP_NODELAY): with Nagle's algorithm on, a dataset
of several PDUs waited for the peer's delayed acknowledgement after each one (≈ 90 ms of every SR
C-STORE, whatever the peer). DCMTK's `storescp` is the peer."""

from __future__ import annotations

import socket
import subprocess

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import Verification

from core.config import DicomNode
from peers import free_port, require, stop_processes, wait_for
from workers.association import associate


def test_an_outgoing_association_has_nagle_off(tmp_path):
    port = free_port()
    proc = subprocess.Popen([require("storescp"), "-od", str(tmp_path), "-aet", "PEER", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(["echoscu", "127.0.0.1", str(port)], capture_output=True).returncode == 0,
                 what="storescp")
        assoc = associate(DicomNode.parse(f"PEER@127.0.0.1:{port}"), calling_aet="PACSTRIAGE", timeout=10,
                          contexts=[Verification, ("1.2.840.10008.5.1.4.1.1.88.34",
                                                   [ExplicitVRLittleEndian, ImplicitVRLittleEndian])])
        try:
            raw = assoc.dul.socket.socket
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
    finally:
        stop_processes([proc])
