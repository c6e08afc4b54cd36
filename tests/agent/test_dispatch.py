"""Balanced dispatch (agent.dispatch): the accepting process hands each connection to the
process with the fewest in progress, itself included, over real UNIX socket pairs; a child
that closes its end gets no more connections."""

from __future__ import annotations

import socket
import time

import pytest

from agent.dispatch import Dispatcher, Receiver, pair


def tcp_pair(server: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(the modality's end, the accepted end) of one real loopback connection."""
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    return client, accepted


@pytest.fixture
def server():
    s = socket.create_server(("127.0.0.1", 0))
    yield s
    s.close()


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_connections_go_to_the_least_loaded_process_and_are_counted_out(server):
    dispatcher = Dispatcher()
    receivers = {}
    for slot in (1, 2):
        ours, theirs = pair()
        dispatcher.attach(slot, ours)
        receivers[slot] = Receiver(theirs)
    where, kept = [], []
    try:
        for _ in range(6):
            client, accepted = tcp_pair(server)
            kept.append(client)
            if dispatcher.route(accepted):
                accepted.close()
                where.append("child")
            else:
                kept.append(accepted)
                where.append("local")
        # ties go to a child; the accepting process takes one when it has fewer than every child
        assert where == ["child", "child", "local", "child", "child", "local"]
        assert dispatcher.loads() == {0: 2, 1: 2, 2: 2}

        # a child receives the very connection: what the modality writes arrives there
        got = receivers[1].receive()
        kept.append(got)
        kept[0].sendall(b"A-ASSOCIATE-RQ")
        assert got.recv(64) == b"A-ASSOCIATE-RQ"

        receivers[1].closed()
        receivers[1].closed()
        assert wait_until(lambda: dispatcher.loads()[1] == 0)
        dispatcher.local_closed()
        assert dispatcher.loads() == {0: 1, 1: 0, 2: 2}
    finally:
        dispatcher.stop()
        for s in kept:
            s.close()


def test_a_child_that_is_gone_gets_no_more_connections(server):
    dispatcher = Dispatcher()
    ours, theirs = pair()
    dispatcher.attach(1, ours)
    ours2, theirs2 = pair()
    dispatcher.attach(2, ours2)
    theirs.close()  # child 1 exited
    assert wait_until(lambda: 1 not in dispatcher.loads())
    receiver = Receiver(theirs2)
    kept = []
    try:
        for _ in range(3):
            client, accepted = tcp_pair(server)
            kept += [client, accepted]
            dispatcher.route(accepted)
        assert dispatcher.loads() == {0: 1, 2: 2}
        assert receiver.receive() is not None
        theirs2.close()
        assert wait_until(lambda: dispatcher.loads() == {0: 1})
        client, accepted = tcp_pair(server)
        kept += [client, accepted]
        assert dispatcher.route(accepted) is False, "no child left: served by the accepting process"
    finally:
        dispatcher.stop()
        for s in kept:
            s.close()


def test_the_receiver_reports_the_accepting_process_gone():
    ours, theirs = pair()
    receiver = Receiver(theirs)
    ours.close()
    with pytest.raises(EOFError):
        receiver.receive()
    theirs.close()
