"""A third-party Open311 client from PyPI against the real town server.

`georeport` (0.3.1) lists, fetches and filters service requests in JSON and in XML (parsed with
xmltodict, so our XML is read by a real client's parser). It has no call to create a request, so
requests are filed with a plain form POST as the GeoReport v2 text describes. It also sends no
`api_key` on reads; Gridlink's reads need one (they are scoped to the key's account), so the
test adds the key to its GET requests, as such a client must be configured for this endpoint.

The other client named in the issue, `three` (0.8.0, the latest on PyPI), is Python 2 only
(`from itertools import ifilter`) and cannot be imported on Python 3.
"""

import subprocess

import pytest
import requests

georeport = pytest.importorskip("georeport")
from georeport import georeport as georeport_module  # noqa: E402

from conftest import BIN  # noqa: E402


@pytest.fixture(scope="module")
def api_key(town):
    _, db = town
    out = subprocess.run(
        [str(BIN), "apikey", "--db", str(db), "--person", "zhaomin", "--name", "12345热线"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture
def client(town, api_key, monkeypatch):
    base, _ = town
    real_get = requests.get

    def get_with_key(url, params=None, **kw):
        return real_get(url, params={**(params or {}), "api_key": api_key}, **kw)

    monkeypatch.setattr(georeport_module.requests, "get", get_with_key)

    def make(fmt):
        return georeport.GeoReport(base + "/open311/v2", api_key=api_key, output_format=fmt)

    return make


def file_request(base, key, code, description):
    r = requests.post(
        base + "/open311/v2/requests.json",
        data={
            "api_key": key,
            "service_code": code,
            "description": description,
            "lat": "25.13",
            "long": "102.05",
            "address_string": "广通镇老街",
            "media_url": "https://photos.example.org/lamp.jpg",
            "phone": "",
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    return r.json()[0]["service_request_id"]


def test_georeport_lists_fetches_and_filters_in_json_and_xml(town, api_key, client):
    base, _ = town
    lamp = file_request(base, api_key, "0802", "路灯不亮,联系13812345678")
    rubbish = file_request(base, api_key, "0501", "垃圾堆放")

    for fmt in ("json", "xml"):
        c = client(fmt)
        services = c.get_service_list()
        assert len(services) >= 40
        assert {"service_code", "service_name", "metadata", "type", "group"} <= set(services[0])

        listed = c.get_service_requests()
        if isinstance(listed, dict):  # xmltodict gives a dict for a single element
            listed = [listed]
        ids = {r["service_request_id"] for r in listed}
        assert {lamp, rubbish} <= ids, (fmt, ids)

        one = c.get_service_request(lamp)
        assert one["service_request_id"] == lamp
        assert one["service_code"] == "0802"
        assert one["media_url"] == "https://photos.example.org/lamp.jpg"
        assert "13812345678" not in one["description"], "mobile numbers are masked"
        assert "138****5678" in one["description"]

        only = c.get_service_requests(service_code="0501")
        only = [only] if isinstance(only, dict) else only
        # Other tests share this town: every listed request is of the asked service.
        assert rubbish in {r["service_request_id"] for r in only} and lamp not in {r["service_request_id"] for r in only}
        assert {r["service_code"] for r in only} == {"0501"}

        both = c.get_service_requests(service_code="0501,0802", status="open")
        both = [both] if isinstance(both, dict) else both
        assert {r["service_request_id"] for r in both} >= {lamp, rubbish}

        # service_request_id overrides the other filters.
        by_id = c.get_service_requests(service_request_id=lamp, service_code="0501", status="closed")
        by_id = [by_id] if isinstance(by_id, dict) else by_id
        assert [r["service_request_id"] for r in by_id] == [lamp]


def test_errors_reach_the_client_in_the_spec_shape(town, api_key):
    base, _ = town
    r = requests.get(base + "/open311/v2/requests/GT-1999-000001.xml", params={"api_key": api_key}, timeout=10)
    assert r.status_code == 404
    assert r.headers["content-type"] == "text/xml; charset=utf-8"
    import xmltodict

    err = xmltodict.parse(r.content)["errors"]["error"]
    assert err["code"] == "404" and err["description"]
    r = requests.get(base + "/open311/v2/no-such-thing.json", timeout=10)
    assert r.status_code == 404 and r.json()[0]["code"] == 404
