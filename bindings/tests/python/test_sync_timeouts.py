"""Sync on a dead link, through the generated bindings: the time limits are settable, a link that
accepts and never answers fails after the answer limit, and sync_with_retry is there."""

import asyncio
import socket
import threading
import time

import pytest

import gridlink_ffi as g
from conftest import PASSWORD


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield "http://127.0.0.1:%d" % listener.getsockname()[1]
    listener.close()
    for c in held:
        c.close()


def test_defaults_suit_a_2g_link_and_can_be_changed(tmp_path):
    phone = g.GridlinkClient.open(str(tmp_path / "p"), "http://127.0.0.1:9")
    t = phone.sync_timeouts()
    assert (t.connect_s, t.response_s, t.transfer_s, t.round_s) == (15, 30, 120, 240)
    phone.set_sync_timeouts(g.SyncTimeoutsView(connect_s=5, response_s=10, transfer_s=60, round_s=90))
    assert phone.sync_timeouts().response_s == 10
    with pytest.raises(g.GridlinkError.Invalid):
        phone.set_sync_timeouts(g.SyncTimeoutsView(connect_s=0, response_s=10, transfer_s=60, round_s=90))
    assert phone.sync_timeouts().connect_s == 5, "a refused setting changes nothing"


def test_a_link_that_never_answers_fails_after_the_answer_limit(tmp_path, silent_server):
    phone = g.GridlinkClient.open(str(tmp_path / "p"), silent_server)
    phone.set_sync_timeouts(g.SyncTimeoutsView(connect_s=2, response_s=2, transfer_s=60, round_s=120))
    started = time.monotonic()
    with pytest.raises(g.GridlinkError.Network):
        asyncio.run(phone.login("wangfang", PASSWORD, "手机"))
    took = time.monotonic() - started
    # The answer limit is 2 s; the whole request's 120 s is never reached.
    assert 2 <= took < 60, took


def test_sync_with_retry_is_offered(server, tmp_path):
    phone = g.GridlinkClient.open(str(tmp_path / "p"), server)
    with pytest.raises(g.GridlinkError.Auth):
        asyncio.run(phone.sync_with_retry())  # not logged in: refused at once, not retried
    asyncio.run(phone.login("wangfang", PASSWORD, "手机"))
    phone.report_incident(
        g.IncidentInput(category="0501", title="垃圾", description="", address="", grid=None, latitude=None, longitude=None, urgent=False, note="")
    )
    report = asyncio.run(phone.sync_with_retry())
    assert report.pushed == 1
    assert phone.sync_status().pending == 0
