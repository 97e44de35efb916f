#!/usr/bin/env python3
"""Regenerates hj212.capture: one day (2026-11-12) of HJ 212-2017 packets from the
wastewater outlet of the station in HJ212.toml (ST=32).

- CN=2061 hourly data for 00:00..23:00: COD (w01018) above its 50 mg/L limit at 02-04 h,
  ammonia (w21003) above 5 mg/L at 03 h; w01018-Flag=M (maintenance) for 8 hours, 14-21 h;
  a -Max above the limit at 10 h with a normal -Avg.
- CN=2051 ten-minute data for 10:00..10:50, one of them with an -Avg above the COD limit
  (minute data never makes a lead).

Frames: "##" + 4-digit DATA length + DATA + CRC (HJ 212 Appendix A, hex, high byte first) + CRLF.
Run: python3 make_hj212_capture.py   (writes hj212.capture next to this file)
"""
import os
import random

MN = "370305A00000000000000017"
PW = "581203"
DAY = "20261112"


def crc16_hj212(data: bytes) -> int:
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


# The CRC must agree with connectors/hj212 (domain.md §3.2 and §3.7).
assert crc16_hj212(b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&") == 0x1C80
assert crc16_hj212(b"QN=20240601100000123;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=4;CP=&&DataTime=20240601090000;w01018-Min=18.2,w01018-Avg=21.5,w01018-Max=25.0,w01018-Cou=3.2,w01018-Flag=N;w21003-Min=0.80,w21003-Avg=1.05,w21003-Max=1.31,w21003-Cou=0.16,w21003-Flag=N&&") == 0x8941


def frame(data: str) -> bytes:
    raw = data.encode("ascii")
    assert len(raw) <= 1024
    return b"##%04d" % len(raw) + raw + b"%04X" % crc16_hj212(raw) + b"\r\n"


def qn(date: str, hh: int, mm: int, ss: int, ms: int) -> str:
    return f"{date}{hh:02d}{mm:02d}{ss:02d}{ms:03d}"


def segment(cn, flag, qn_text, data_time, readings):
    cp = ";".join(readings)
    return f"QN={qn_text};ST=32;CN={cn};PW={PW};MN={MN};Flag={flag};CP=&&DataTime={data_time};{cp}&&"


def pollutant(code, avg, fmt, seconds, flow_m3=None, flag="N", lo=0.85, hi=1.15, mx=None):
    f = lambda x: format(x, fmt)
    parts = [f"{code}-Min={f(avg * lo)}", f"{code}-Avg={f(avg)}", f"{code}-Max={f(mx if mx is not None else avg * hi)}"]
    if code == "w00000":
        parts.append(f"{code}-Cou={avg * seconds / 1000:.2f}")            # L/s -> m3
    elif flow_m3 is not None:
        parts.append(f"{code}-Cou={avg * flow_m3 / 1000:.3f}")            # mg/L x m3 -> kg
    parts.append(f"{code}-Flag={flag}")
    return ",".join(parts)


def readings(flow, ph, cod, nh3, tp, seconds, cod_flag="N", cod_max=None):
    m3 = round(flow * seconds / 1000, 2)
    return [
        pollutant("w00000", flow, ".2f", seconds),
        pollutant("w01001", ph, ".2f", seconds, lo=0.98, hi=1.02),
        pollutant("w01018", cod, ".1f", seconds, m3, cod_flag, mx=cod_max),
        pollutant("w21003", nh3, ".2f", seconds, m3),
        pollutant("w21011", tp, ".3f", seconds, m3),
    ]


def main():
    rnd = random.Random(20261112)
    exceed_cod = {2: 63.7, 3: 78.2, 4: 55.1}
    exceed_nh3 = {3: 6.42}
    maintenance = range(14, 22)
    hourly = []
    for h in range(24):
        flow = round(rnd.uniform(5.8, 9.2), 2)
        ph = round(rnd.uniform(7.05, 7.85), 2)
        cod = exceed_cod.get(h, round(rnd.uniform(27.5, 43.5), 1))
        if h == 10:
            cod = 41.6
        nh3 = exceed_nh3.get(h, round(rnd.uniform(1.15, 2.90), 2))
        tp = round(rnd.uniform(0.120, 0.360), 3)
        flag = "M" if h in maintenance else "N"
        cod_max = 57.9 if h == 10 else None
        hourly.append((h, (flow, ph, cod, nh3, tp, flag, cod_max)))
    lines = []
    for h, (flow, ph, cod, nh3, tp, flag, cod_max) in hourly:
        sent_date, sent_h = (DAY, h + 1) if h < 23 else ("20261113", 0)
        if h == 10:  # minute data of 10:00-10:50 goes out before the 10 h hourly packet
            minute_cod = [38.4, 40.9, 36.2, 52.3, 44.0, 37.8]
            for i, mc in enumerate(minute_cod):
                mm = i * 10
                sm = mm + 10
                sh, sm = (10, sm) if sm < 60 else (11, 0)
                data = segment(2051, 4, qn(DAY, sh, sm, 2, 100 + i * 37), f"{DAY}10{mm:02d}00",
                               readings(round(flow + rnd.uniform(-0.4, 0.4), 2), round(ph + rnd.uniform(-0.05, 0.05), 2),
                                        mc, round(nh3 + rnd.uniform(-0.2, 0.2), 2), round(tp + rnd.uniform(-0.02, 0.02), 3),
                                        600, cod_max=round(mc * 1.1, 1) if mc != 52.3 else 57.9))
                lines.append(frame(data))
        data = segment(2061, 5, qn(sent_date, sent_h, 0, 5, rnd.randrange(1000)), f"{DAY}{h:02d}0000",
                       readings(flow, ph, cod, nh3, tp, 3600, flag, cod_max))
        lines.append(frame(data))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hj212.capture")
    with open(out, "wb") as f:
        f.writelines(lines)
    print(f"wrote {len(lines)} packets to {out}")


if __name__ == "__main__":
    main()
