"""The phone never freezes while it syncs: with the server's answer stalled for 10 s on the way
(a slow 2G link), every UI call — reading the catalog, a list, a record, a search, reporting a
new incident, the status line — returns at once, and what was written meanwhile syncs next time."""

import asyncio
import socket
import threading
import time
import urllib.parse

import pytest

import gridlink_ffi as g
from conftest import PASSWORD


class StallingProxy:
    """Forwards TCP to the server; while `stall` is set, holds each answer that long."""

    def __init__(self, upstream):
        u = urllib.parse.urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.stall = 0.0
        self.in_flight = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            asked = threading.Event()  # a request went up since the last answer began
            threading.Thread(target=self._pipe, args=(client, server, asked, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, asked, True), daemon=True).start()

    def _pipe(self, src, dst, asked, answers):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not answers:
                    asked.set()
                elif asked.is_set():
                    asked.clear()
                    if self.stall:
                        self.in_flight.set()
                        time.sleep(self.stall)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def proxy(server):
    p = StallingProxy(server)
    yield p
    p.close()


def incident(title):
    return g.IncidentInput(category="0501", title=title, description="", address="", grid=None, latitude=None, longitude=None, urgent=False, note="")


def test_ui_calls_return_at_once_while_a_sync_waits_on_the_network(proxy, tmp_path):
    phone = g.GridlinkClient.open(str(tmp_path / "p"), proxy.url)
    asyncio.run(phone.login("wangfang", PASSWORD, "手机"))
    rid = phone.report_incident(incident("村口垃圾"))
    asyncio.run(phone.sync_now())

    proxy.stall = 10.0
    phone.report_incident(incident("桥头垃圾"))  # something to push
    outcome = {}
    sync = threading.Thread(target=lambda: outcome.update(report=asyncio.run(phone.sync_now())))
    sync.start()
    assert proxy.in_flight.wait(30), "the sync request reached the stalled link"

    timings = {}

    def timed(name, call):
        started = time.monotonic()
        value = call()
        timings[name] = time.monotonic() - started
        return value

    timed("categories", phone.categories)
    timed("my_tasks", lambda: phone.my_tasks(50))
    timed("record", lambda: phone.record(rid))
    timed("search", lambda: phone.search("垃圾", 20))
    new = timed("report_incident", lambda: phone.report_incident(incident("路边垃圾")))
    timed("sync_status", phone.sync_status)
    assert sync.is_alive(), "the UI calls ran while the sync was still waiting on the network"
    # Milliseconds in practice; a generous bound so that a busy machine cannot fail the test,
    # far below the 10 s the link is stalled.
    slow = {k: round(v, 3) for k, v in timings.items() if v > 2.0}
    assert not slow, slow

    sync.join(60)
    assert outcome["report"].pushed >= 1
    proxy.stall = 0.0
    asyncio.run(phone.sync_now())
    assert phone.sync_status().pending == 0, "what was written during the sync went in the next one"
    assert phone.record(new).number.startswith("GT-")
