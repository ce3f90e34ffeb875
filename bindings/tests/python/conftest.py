"""A real town server for the binding tests: the built `gridlink-server` on 127.0.0.1, a small town
imported through its CLI."""

import os
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = ROOT / "target" / "debug" / "gridlink-server"
PASSWORD = "test-password-1"

sys.path.insert(0, str(ROOT / "target" / "bindings" / "python"))

UNITS = """code,name,kind,parent,department_key
532331101,广通镇,镇,,
532331101201,广通社区,村,532331101,
532331101201-01,一组,组,532331101201,
532331101201-01-01,一组1号网格,网格,532331101201-01,
532331101-D01,综合行政执法中队,部门,532331101,zhifa
"""

PEOPLE = f"""id,name,role,unit,password
wangfang,王芳,网格员,532331101201-01-01,{PASSWORD}
lijun,李军,便民服务站代办员,532331101201,{PASSWORD}
zhaomin,赵敏,综治中心工作人员,532331101,{PASSWORD}
chenqiang,陈强,部门经办人,532331101-D01,{PASSWORD}
"""


@pytest.fixture(scope="session")
def server(town):
    return town[0]


@pytest.fixture(scope="session")
def town(tmp_path_factory):
    """(base URL, database path) of the running town server."""
    d = tmp_path_factory.mktemp("town")
    db = d / "town.db"
    for what, text in (("units", UNITS), ("people", PEOPLE)):
        f = d / f"{what}.csv"
        f.write_text(text, encoding="utf-8")
        subprocess.run([str(BIN), "import", "--db", str(db), what, str(f)], check=True, capture_output=True)
    proc = subprocess.Popen(
        [str(BIN), "serve", "--listen", "127.0.0.1:0", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GRIDLINK_LOG": "warn"},
        text=True,
    )
    base = proc.stdout.readline().strip().split(" ")[-1]
    assert base.startswith("http://127.0.0.1:"), base
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(base + "/healthz", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.2)
    yield base, db
    proc.terminate()
    proc.wait(timeout=10)
