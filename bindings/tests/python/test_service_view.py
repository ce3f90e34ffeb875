"""The service-request screen from the bindings alone: the item in words, mode, materials and what
is missing, and the resident in full only for those who handle the errand."""

import asyncio

import gridlink_ffi as g
from conftest import PASSWORD


def errand(materials, description):
    """Zhang Guilan's old-age allowance (FW004), taken as an errand with her ID number and phone."""
    return g.ServiceRequestInput(
        item="FW004",
        mode="errand",
        resident_name="张桂兰",
        resident_id_number="11010519491231002X",
        resident_phone="13812345678",
        materials_received=materials,
        description=description,
    )


def test_a_request_screen_shows_what_the_station_and_the_town_need(server, tmp_path):
    station = g.GridlinkClient.open(str(tmp_path / "station"), server)
    asyncio.run(station.login("lijun", PASSWORD, "服务站电脑"))
    item = next(i for i in station.service_items() if i.code == "FW004")
    rid = station.receive_service_request(errand(item.materials[:-1], "代办"))
    d = station.perform(rid, g.ActionInput(kind="request_materials", materials=[item.materials[-1]]), "请补交")
    sr = d.service
    assert sr.item_code == "FW004" and sr.item_name == item.name
    assert d.title.startswith(item.name), "a title in words, not the item code"
    assert (sr.mode, sr.mode_label) == ("errand", "代办")
    assert {m.name: m.received for m in sr.materials} == {m: m != item.materials[-1] for m in item.materials}
    assert sr.missing_materials == [item.materials[-1]]
    # The clerk handling it sees the resident in full.
    assert (sr.resident_name, sr.resident_id_number, sr.resident_phone) == ("张桂兰", "11010519491231002X", "13812345678")
    assert not sr.personal_data_masked
    asyncio.run(station.sync_now())

    # The town center browsing it sees masked values.
    center = g.GridlinkClient.open(str(tmp_path / "center"), server)
    asyncio.run(center.login("zhaomin", PASSWORD, "中心电脑"))
    asyncio.run(center.sync_now())
    sr = center.record(rid).service
    assert sr.personal_data_masked
    assert sr.resident_id_number == "1101**********002X" and sr.resident_phone == "138****5678"
    assert sr.resident_name != "张桂兰" and sr.resident_name.startswith("张")
    assert center.record(rid).service.item_name == item.name



def test_personal_data_key_survives_a_restart_through_the_key_store(tmp_path, server):
    """The app keeps the phone's personal-data key in the platform key store: after a restart,
    unlock() gives it back and the clerk reads the full values again offline. Neither the key nor
    the numbers are ever in the store's files."""
    app = tmp_path / "app"
    phone = g.GridlinkClient.open(str(app), server)
    asyncio.run(phone.login("lijun", PASSWORD, "代办员的手机"))
    key = phone.data_key()
    assert key is not None and len(key) == 32
    rid = phone.receive_service_request(errand([], ""))
    assert phone.record(rid).service.resident_id_number == "11010519491231002X"
    del phone
    # Restarted with no network: masked until the key comes back from the key store.
    again = g.GridlinkClient.open(str(app), "http://127.0.0.1:9")
    sr = again.record(rid).service
    assert sr.personal_data_masked and sr.resident_id_number == "1101**********002X"
    again.unlock(bytes(key))
    sr = again.record(rid).service
    assert not sr.personal_data_masked and sr.resident_phone == "13812345678"
    for f in app.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert bytes(key) not in data, f
            assert b"11010519491231002X" not in data and b"13812345678" not in data, f
