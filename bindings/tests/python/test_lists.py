"""List screens from the bindings alone: filters, pages and totals; search pages with a total;
what a sync changed."""

import asyncio

import pytest

import gridlink_ffi as g
from conftest import PASSWORD


def report(phone, category, title):
    return phone.report_incident(
        g.IncidentInput(category=category, title=title, description="巡查发现", address="", grid=None, latitude=None, longitude=None, urgent=False, note="")
    )


def test_lists_are_filtered_and_paged_with_totals(server, tmp_path):
    phone = g.GridlinkClient.open(str(tmp_path / "p"), server)
    asyncio.run(phone.login("wangfang", PASSWORD, "手机"))
    ids = [report(phone, "0501", f"垃圾{i}") for i in range(5)] + [report(phone, "0503", f"建筑垃圾{i}") for i in range(2)]

    seen = []
    for offset in (0, 3, 6):
        page = phone.list(g.ListFilter(kind=None, statuses=[], open_only=True, closed_only=False, mine=False, my_unit=False, holder=None, within=None, category=None, overdue=False, created_from_ms=None, created_to_ms=None), 3, offset)
        assert page.total == 7
        seen += [r.id for r in page.items]
    assert sorted(seen) == sorted(ids), "every record once across the pages"

    def count(**kw):
        base = dict(kind=None, statuses=[], open_only=False, closed_only=False, mine=False, my_unit=False, holder=None, within=None, category=None, overdue=False, created_from_ms=None, created_to_ms=None)
        base.update(kw)
        return phone.list(g.ListFilter(**base), 50, 0).total

    assert count(category="0503") == 2
    assert count(category="05") == 7, "a major category prefix"
    assert count(statuses=["reported"], kind="incident") == 7
    assert count(closed_only=True) == 0
    assert count(mine=True) == 7, "a grid member can act on fresh reports of the grid"
    assert count(within="532331101201") == 7
    assert count(overdue=True) == 0
    with pytest.raises(g.GridlinkError.Invalid):
        count(statuses=["flying"])
    with pytest.raises(g.GridlinkError.Invalid):
        count(open_only=True, closed_only=True)

    page = phone.search_page("垃圾", 4, 0)
    assert page.total == 7 and len(page.items) == 4
    rest = phone.search_page("垃圾", 4, 4)
    assert len(rest.items) == 3 and not {r.id for r in page.items} & {r.id for r in rest.items}

    report_ = asyncio.run(phone.sync_now())
    assert report_.pushed == 7
    assert set(ids) <= set(report_.changed_ids), "the server's numbering and routing came back for each"
    assert report_.removed_ids == []
