"""`concentrator read` and `concentrator scan` on a mixed `hil-sim bus --protocols` line
(real pyserial on a PTY): the protocol each meter speaks is found and said, `--protocol`
selects one, values equal the simulator's ground truth."""

from __future__ import annotations

import json

from helpers import read_json, run_cli, truth_of

MIX = "dlt645,dlt698,dlt645-1997"


def _told(truth: list, meter: str, name: str) -> str:
    return [r.value for r in truth if r.meter == meter and r.quantity == name][-1]


def test_read_detects_each_protocol_and_reads_true_values(sim) -> None:
    s = sim("--meters", "3", "--protocols", MIX, "--baud", "9600", "--preamble", "2")
    link = str(s.links[0])
    m2007, m698, m1997 = s.meters
    docs = {
        m: read_json("--port", link, "--baud", "9600", "--address", m, *names)
        for m, names in (
            (m2007, ("voltage_a", "energy_fwd_total")),
            (m698, ("voltage", "energy_fwd_total", "power_total", "clock")),
            (m1997, ("voltage_a", "energy_fwd_block", "meter_time")),
        )
    }
    s.stop()
    truth = truth_of(s.truth)
    assert [docs[m]["protocol"] for m in s.meters] == ["dlt645", "dlt698", "dlt645-1997"]
    assert all(doc["protocol_detected"] for doc in docs.values())
    for meter, doc in docs.items():
        for r in doc["readings"]:
            assert r["value"] == _told(truth, meter, r["name"]), (meter, r)
    names698 = [r["name"] for r in docs[m698]["readings"]]
    assert names698 == [
        "voltage_a", "voltage_b", "voltage_c", "energy_fwd_total", "power_total", "clock",
    ]  # fmt: skip
    assert docs[m698]["readings"][0]["di"] == "20000201"
    names1997 = [r["name"] for r in docs[m1997]["readings"]]
    assert names1997[:3] == ["voltage_a", "energy_fwd_total", "energy_fwd_t1"]


def test_protocol_option_selects_one_and_says_what_it_heard(sim) -> None:
    s = sim("--meters", "3", "--protocols", MIX, "--baud", "9600")
    link = str(s.links[0])
    args = ("--port", link, "--baud", "9600", "--timeout", "0.3")
    doc = read_json(*args, "--protocol", "dlt698", "--address", s.meters[1], "frequency")
    assert doc["protocol"] == "dlt698" and doc["protocol_detected"] is False
    assert [r["name"] for r in doc["readings"]] == ["frequency"]
    # A 645-2007 meter asked in 698.45: silence, exit 3, the protocol in the message.
    wrong = run_cli("read", *args, "--protocol", "dlt698", "--address", s.meters[0], "clock")
    assert wrong.returncode == 3, wrong.stderr
    assert "no reply within 0.300 s" in wrong.stderr
    # Nobody at this address in any protocol: each protocol's silence is listed.
    none = run_cli("read", *args, "--address", "999999999998", "voltage_a")
    assert none.returncode == 3
    for name in ("DL/T 645-2007", "DL/T 698.45", "DL/T 645-1997"):
        assert name in none.stderr
    # A quantity the detected protocol has not got is a usage error, after detection.
    bad = run_cli("read", *args, "--address", s.meters[2], "clock")
    assert bad.returncode == 2 and "DL/T 645-1997" in bad.stderr
    # Canonical names for a 1997 meter; what it lacks is listed by that name.
    doc97 = read_json(*args, "--address", s.meters[2], "power_factor", "reactive_power_total")
    assert [r["name"] for r in doc97["readings"]] == ["power_factor"]
    assert doc97["readings"][0]["di"] == "B650"
    assert doc97["not_supported"] == ["reactive_power_total"]
    table = run_cli("read", *args, "--address", s.meters[1], "voltage_a")
    assert table.returncode == 0 and "DL/T 698.45 (detected)" in " ".join(table.stdout.split())


def test_scan_lists_each_meter_with_its_protocol(sim) -> None:
    s = sim("--meters", "6", "--protocols", MIX, "--baud", "0")
    scan = ("scan", "--port", str(s.links[0]), "--baud", "0", "--timeout", "0.05")
    result = run_cli(*scan, "--retries", "0", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["meters"] == sorted(s.meters)
    kinds = MIX.split(",")
    assert doc["protocols"] == {m: kinds[i % 3] for i, m in enumerate(s.meters)}
    text = run_cli(*scan, "--retries", "0", "--protocol", "dlt645-1997")
    assert text.returncode == 0, text.stderr
    assert text.stdout.split("\n")[:2] == [
        f"{s.meters[2]} dlt645-1997",
        f"{s.meters[5]} dlt645-1997",
    ]
