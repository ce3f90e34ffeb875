"""A day in the town driven through the bindings alone, as an app would: a report with a photo,
the center's two devices, one of them offline, dispatching concurrently; the department's work
voided by the earlier dispatch, and told so; every screen built from the bindings."""

import asyncio
import pathlib
import time

import gridlink_ffi as g
from conftest import PASSWORD

PHOTO = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "street.jpg"


def login(server, tmp_path, name, user, device):
    phone = g.GridlinkClient.open(str(tmp_path / name), server)
    asyncio.run(phone.login(user, PASSWORD, device))
    return phone


def sync(phone):
    return asyncio.run(phone.sync_now())


def test_a_scripted_day_with_concurrent_dispatches(server, tmp_path):
    grid = login(server, tmp_path, "grid", "wangfang", "网格员手机")
    center_desk = login(server, tmp_path, "desk", "zhaomin", "中心电脑")
    center_road = login(server, tmp_path, "road", "zhaomin", "中心手机")
    dept = login(server, tmp_path, "dept", "chenqiang", "部门手机")

    # Morning: a report with a photo, offline, then synced.
    rid = grid.report_incident(
        g.IncidentInput(category="0603", title="河边违章搭建", description="新搭彩钢棚", address="河堤路", grid=None, latitude=None, longitude=None, urgent=False, note="巡查发现")
    )
    sha = grid.attach_photo(rid, str(PHOTO))
    sync(grid)
    # The center's task list and record screen.
    sync(center_desk)
    tasks = center_desk.list(g.ListFilter(kind=None, statuses=[], open_only=False, closed_only=False, mine=True, my_unit=False, holder=None, within=None, category=None, overdue=False, created_from_ms=None, created_to_ms=None), 20, 0)
    assert rid in [t.id for t in tasks.items] and tasks.total >= 1
    record = center_desk.record(rid)
    assert "accept" in [a.kind for a in record.allowed]
    center_desk.perform(rid, g.ActionInput(kind="accept"), "")
    sync(center_desk)
    sync(center_road)
    # The photo view on a device that did not take it.
    jpeg = asyncio.run(center_desk.photo(sha))
    assert jpeg[:2] == b"\xff\xd8"

    # On the road, offline, the second device dispatches to the village first ...
    village = next(u for u in center_road.action_targets(rid, "dispatch") if u.code == "532331101201")
    center_road.perform(rid, g.ActionInput(kind="dispatch", to_unit=village.code, deadline_ms=None), "请村里先处理")
    time.sleep(0.05)
    # ... while the desk dispatches to the department from its picker.
    picker = center_desk.action_targets(rid, "dispatch")
    dept_unit = next(u for u in picker if u.kind == "department")
    assert dept_unit.name == "综合行政执法中队"
    center_desk.perform(rid, g.ActionInput(kind="dispatch", to_unit=dept_unit.code, deadline_ms=None), "")
    sync(center_desk)

    # The department works on it: its task list, sign, handle.
    sync(dept)
    assert [t.id for t in dept.my_tasks(20)] == [rid]
    dept.perform(rid, g.ActionInput(kind="sign"), "")
    dept.perform(rid, g.ActionInput(kind="handle", photos=[]), "已拆除")
    sync(dept)
    assert dept.my_tasks(20) == [], "handed back: nothing left for the department"
    assert dept.notices() == []

    # The road device comes back online: its earlier dispatch voids the department's work.
    sync(center_road)
    report = sync(dept)
    assert rid in report.removed_ids
    assert dept.rejections() == []
    notices = dept.notices()
    assert len(notices) == 1 and notices[0].record_id == rid
    assert "未生效" in notices[0].text and "签收" in notices[0].text and "广通社区" in notices[0].text
    sync(center_desk)
    assert any(n.record_id == rid for n in center_desk.notices()), "the center sees the voided work"
    timeline = center_desk.record(rid).timeline
    assert sum(1 for t in timeline if t.conflict) >= 2, "sign and handle shown as not in effect"

    # A search screen finds it, with a total.
    page = center_desk.search_page("违章搭建", 10, 0)
    assert page.total >= 1 and rid in [r.id for r in page.items]
