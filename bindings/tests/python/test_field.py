"""A field scenario through the generated Python bindings against a real server: login, an
offline report with a photo, sync, and the center's action seen after the next sync."""

import asyncio
import pathlib

import pytest

import gridlink_ffi as g
from conftest import PASSWORD

PHOTO = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "street.jpg"


class Recorder(g.SyncObserver):
    def __init__(self):
        self.seen = []

    def on_status(self, status):
        self.seen.append(status)


def test_offline_report_with_photo_reaches_the_center_and_back(server, tmp_path):
    phone = g.GridlinkClient.open(str(tmp_path / "phone"), server)
    me = asyncio.run(phone.login("wangfang", PASSWORD, "王芳的手机"))
    assert (me.role, me.role_label, me.unit) == ("grid_member", "网格员", "532331101201-01-01")
    assert any(c.code == "0501" and c.name == "暴露垃圾" for c in phone.categories())

    # Offline: the report and its photo wait on the phone.
    rid = phone.report_incident(
        g.IncidentInput(
            category="0501",
            title="村口垃圾堆积",
            description="村口桥头有大量生活垃圾",
            address="一组村口",
            grid=None,
            latitude=25.1312,
            longitude=102.0521,
            urgent=False,
            note="巡查发现",
        )
    )
    sha = phone.attach_photo(rid, str(PHOTO))
    assert len(sha) == 64
    status = phone.sync_status()
    assert (status.pending, status.pending_photos, status.logged_in) == (2, 1, True)
    assert [d.id for d in phone.drafts()] == [rid]
    assert phone.record(rid).number.startswith("临-")
    assert [r.id for r in phone.nearby(25.1313, 102.0522, 100.0)] == [rid]
    assert phone.search("垃圾", 10)[0].id == rid

    recorder = Recorder()
    subscription = phone.observe_sync(recorder)
    report = asyncio.run(phone.sync_now())
    assert (report.pushed, report.photos_uploaded, report.rejected) == (2, 1, [])
    assert recorder.seen[-1].pending == 0 and recorder.seen[-1].last_error is None
    detail = phone.record(rid)
    assert detail.case_number.startswith("GT-")
    assert detail.holder == "532331101201", "routed to the village's inbox"
    assert phone.drafts() == []

    # The center sees it after its own sync and accepts it.
    center = g.GridlinkClient.open(str(tmp_path / "center"), server)
    asyncio.run(center.login("zhaomin", PASSWORD, "综治中心电脑"))
    asyncio.run(center.sync_now())
    seen = center.record(rid)
    assert seen.photos == [sha]
    assert "accept" in [a.kind for a in seen.allowed]
    center.perform(rid, g.ActionInput(kind="accept"), "")
    center.background_sync()

    # The grid member's phone shows it after its next sync.
    asyncio.run(phone.sync_now())
    detail = phone.record(rid)
    assert (detail.status, detail.status_label) == ("accepted", "已受理")
    last = detail.timeline[-1]
    assert (last.actor_name, last.role_label, last.action_label) == ("赵敏", "综治中心工作人员", "受理")
    subscription.cancel()


def test_errors_are_typed_and_in_chinese(server, tmp_path):
    phone = g.GridlinkClient.open(str(tmp_path / "p"), server)
    with pytest.raises(g.GridlinkError.Auth) as e:
        asyncio.run(phone.login("wangfang", "wrong-password", "手机"))
    assert "用户名或密码错误" in str(e.value)
    asyncio.run(phone.login("wangfang", PASSWORD, "手机"))
    bad = g.IncidentInput(
        category="9999", title="x", description="", address="", grid=None, latitude=None, longitude=None, urgent=False, note=""
    )
    with pytest.raises(g.GridlinkError.Invalid) as e:
        phone.report_incident(bad)
    assert "9999" in str(e.value)
    rid = phone.report_incident(
        g.IncidentInput(category="0802", title="路灯不亮", description="", address="", grid=None, latitude=None, longitude=None, urgent=False, note="")
    )
    with pytest.raises(g.GridlinkError.NotAllowed):
        phone.perform(rid, g.ActionInput(kind="close"), "")
    with pytest.raises(g.GridlinkError.Invalid):
        phone.attach_photo(rid, "/nonexistent/photo.jpg")
    with pytest.raises(g.GridlinkError.Invalid):
        phone.receive_service_request(
            g.ServiceRequestInput(item="FW004", mode="flying", resident_name="张三", resident_id_number=None, resident_phone=None, materials_received=[], description="")
        )
    offline = g.GridlinkClient.open(str(tmp_path / "p2"), "http://127.0.0.1:9")
    with pytest.raises(g.GridlinkError.Network):
        asyncio.run(offline.login("wangfang", PASSWORD, "手机"))


def test_station_takes_a_request_and_completes_its_materials(server, tmp_path):
    station = g.GridlinkClient.open(str(tmp_path / "station"), server)
    asyncio.run(station.login("lijun", PASSWORD, "服务站电脑"))
    item = next(i for i in station.service_items() if i.code == "FW004")
    assert "errand" in item.modes
    rid = station.receive_service_request(
        g.ServiceRequestInput(
            item="FW004",
            mode="errand",
            resident_name="张桂兰",
            resident_id_number="11010519491231002X",
            resident_phone="13812345678",
            materials_received=item.materials[:-1],
            description="老人行动不便,代办",
        )
    )
    station.perform(rid, g.ActionInput(kind="request_materials", materials=[item.materials[-1]]), "请补交")
    detail = station.edit_service_request(rid, None, "材料已补交", [item.materials[-1]], None)
    assert detail.notes == "材料已补交"
    detail = station.perform(rid, g.ActionInput(kind="supply_materials", materials=[item.materials[-1]]), "")
    assert detail.status_label == "已受理"
    assert station.receive_batch("no-such-batch") == []
    with pytest.raises(g.GridlinkError.Invalid) as e:
        station.receive_service_request(
            g.ServiceRequestInput(item="FW004", mode="errand", resident_name="李四", resident_id_number="110105194912310021", resident_phone=None, materials_received=[], description="")
        )
    assert "110105194912310021" not in str(e.value), "the ID number is never echoed"
