"""Pickers from the bindings alone: the units a person may dispatch or escalate to, with names,
checked by the same rules as the action; the department responsible for a category."""

import asyncio

import pytest

import gridlink_ffi as g
from conftest import PASSWORD


def test_pickers_offer_exactly_the_units_the_rules_accept(server, tmp_path):
    center = g.GridlinkClient.open(str(tmp_path / "c"), server)
    asyncio.run(center.login("zhaomin", PASSWORD, "中心电脑"))
    names = {u.code: u.name for u in center.units()}
    assert names["532331101-D01"] == "综合行政执法中队", "the units arrive with the login"

    rid = center.report_incident(
        g.IncidentInput(category="0503", title="建筑垃圾", description="", address="", grid="532331101201-01-01", latitude=None, longitude=None, urgent=False, note="")
    )
    center.perform(rid, g.ActionInput(kind="accept"), "")
    # The record screen builds the action's form from what the option asks for.
    option = next(a for a in center.record(rid).allowed if a.kind == "dispatch")
    assert option.params == ["to_unit", "deadline_ms"] and option.required_params == ["to_unit"]
    try:
        center.perform(rid, g.ActionInput(kind="dispatch"), "")
        raise AssertionError("a dispatch without a unit was taken")
    except g.GridlinkError as e:
        assert "派遣" in str(e) and "单位" in str(e), e
    targets = center.action_targets(rid, "dispatch")
    codes = [t.code for t in targets]
    assert "532331101-D01" in codes and "532331101201" in codes, codes
    assert "532331101" not in codes, "not to itself"
    assert all(t.name for t in targets)
    dept = next(t for t in targets if t.code == "532331101-D01")
    assert (dept.kind, dept.kind_label) == ("department", "部门")
    # Every offered target can really be taken.
    center.perform(rid, g.ActionInput(kind="dispatch", to_unit=dept.code, deadline_ms=None), "")

    grid = g.GridlinkClient.open(str(tmp_path / "g"), server)
    asyncio.run(grid.login("wangfang", PASSWORD, "手机"))
    own = grid.report_incident(
        g.IncidentInput(category="0501", title="垃圾", description="", address="", grid=None, latitude=None, longitude=None, urgent=False, note="")
    )
    # Upwards only, to the units above the grid (the rules let a report skip a level).
    assert [t.code for t in grid.action_targets(own, "escalate")] == ["532331101", "532331101201", "532331101201-01"]
    with pytest.raises(g.GridlinkError.Invalid):
        grid.action_targets(own, "sign")
    assert grid.responsible_department("0602").code == "532331101-D01", "违章搭建: 综合行政执法"
    assert center.responsible_department("0501") is None, "环卫 is not a unit of this small town"
