"""Outgoing DICOM associations (we are the SCU): AE title, timeouts, presentation contexts, release.

One place for what the SR sink, the UPS sink, the prior-exam query and the prefetch share.
A failure raises `AssociationFailed` whose text names the peer (AE, host, port) and what
happened, never a patient value; `permanent` is True when the peer rejected the association
permanently (A-ASSOCIATE-RJ result 1), so retrying cannot help.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from core.config import DicomNode
from core.privacy import quiet_dicom_libraries


class AssociationFailed(Exception):
    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def associate(node: DicomNode, *, calling_aet: str, contexts: list, timeout: float) -> Association:
    """An established association with `node`; `contexts` are abstract syntaxes or (syntax, [transfer syntaxes])."""
    quiet_dicom_libraries()
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for context in contexts:
        if isinstance(context, tuple):
            ae.add_requested_context(*context)
        else:
            ae.add_requested_context(context)
    rejection: dict[str, int] = {}

    def on_acse(event) -> None:
        p = event.primitive
        if isinstance(p, A_ASSOCIATE) and p.result in (0x01, 0x02):
            rejection.update(result=p.result, source=p.result_source, reason=p.diagnostic)

    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.aet, evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)])
    except OSError as exc:
        raise AssociationFailed(f"{node}: {exc.__class__.__name__}") from None
    if assoc.is_established:
        no_delay(assoc)
        return assoc
    if assoc.is_rejected or rejection:  # the A-ASSOCIATE-RJ was read even if the peer's close then won the race (seen under load)
        permanent = rejection.get("result") == 0x01
        raise AssociationFailed(f"association rejected by {node} ({'permanent' if permanent else 'transient'}, "
                                f"source {rejection.get('source')}, reason {rejection.get('reason')})", permanent)
    what = "aborted" if assoc.is_aborted else "no association (connection refused or timed out)"
    raise AssociationFailed(f"{what} with {node}")


def no_delay(assoc: Association) -> None:
    """Send each PDU at once (TCP_NODELAY). pynetdicom leaves Nagle's algorithm on: a dataset sent
    as several PDUs then waits, PDU after PDU, for the peer's delayed acknowledgement (40 ms on
    Linux) — about 90 ms of the C-STORE of a 20 KB SR, whatever the peer."""
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # no socket (closed meanwhile): nothing to speed up
        pass


@contextmanager
def association(node: DicomNode, **options) -> Iterator[Association]:
    """`associate()`, released on a normal exit and aborted after an exception."""
    assoc = associate(node, **options)
    try:
        yield assoc
    except BaseException:
        if assoc.is_alive():
            assoc.abort()
        raise
    if assoc.is_established:
        assoc.release()
