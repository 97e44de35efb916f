#!/usr/bin/env python3
"""Checks the connector samples against the contracts, without the Rust code.

For every mapping (*/…toml except HJ212.toml) it reads the native data the way
connector-contract.md §2 describes, applies the rules, and checks each lead with
schemas/envelope.schema.json + schemas/facts/<lead_type>.schema.json and the domain
rules the samples must meet (USCC / ID check characters, division codes, time order,
dates in 2026 before 2026-11-30, unique case ids, farmland areas). It also checks
hj212.capture (framing, length, CRC, MN/PW/ST) against HJ212.toml.

Needs openpyxl and jsonschema. Run from the repository root:
    python3 connectors/samples/check_samples.py
"""
import csv
import datetime as dt
import io
import json
import pathlib
import sys
import tomllib

import jsonschema
import openpyxl

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCHEMAS = REPO / "schemas"
ZIBO = {"370302", "370303", "370304", "370305", "370306", "370321", "370322", "370323"}
LIMIT = dt.datetime(2026, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
TODAY = dt.date(2026, 11, 30)
UNITS = {("mu", "m2"): 10000 / 15, ("hectare", "m2"): 10000.0, ("m2", "m2"): 1.0,
         ("wan_yuan", "cny"): 10000.0, ("kg", "t"): 0.001}
RULE_KEYS = {"column", "type", "map", "unit", "to", "date_format", "default", "optional", "map_empty",
             "value", "template"}
TOP = {"lead_type", "schema_version", "kind", "source", "occurred_at", "reported_at", "location",
       "subjects", "summary", "facts", "attachments", "penalty", "extensions"}

DIVISIONS = {}
with open(REPO / "data" / "gbt2260_divisions.csv", encoding="utf-8") as f:
    for row in csv.DictReader(f):
        if not row["valid_until_year"]:
            DIVISIONS[row["code"]] = row["level"]

USCC_CS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_W = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
ID_W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def uscc_ok(s):
    if len(s) != 18 or any(c not in USCC_CS for c in s) or not s[2:8].isdigit():
        return False
    total = sum(USCC_CS.index(c) * w for c, w in zip(s, USCC_W))
    return s[17] == USCC_CS[(31 - total % 31) % 31]


def id_ok(s):
    s = s.upper()
    if len(s) != 18 or not s[:17].isdigit() or not (s[17].isdigit() or s[17] == "X"):
        return False
    try:
        birth = dt.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if birth.year < 1900 or birth > TODAY:
        return False
    return s[17] == "10X98765432"[sum(int(c) * w for c, w in zip(s[:17], ID_W)) % 11]


# HJ 212 CRC, checked against the packets of connectors/hj212/tests/common/mod.rs.
def crc16_hj212(data):
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            lsb = reg & 1
            reg >>= 1
            if lsb:
                reg ^= 0xA001
    return reg


class Report:
    def __init__(self):
        self.problems = 0

    def bad(self, where, msg):
        self.problems += 1
        print(f"  FAIL {where}: {msg}")


def empty(v):
    return v is None or (isinstance(v, str) and v.strip() == "")


def read_rows(mapping, path):
    """(header, [(row_no, {column: value}, raw_key)]) as §2/§3 count rows."""
    inp = mapping["input"]
    fmt = inp["format"]
    if fmt == "csv":
        raw = path.read_bytes()
        enc = inp.get("encoding", "auto")
        if enc == "auto":
            if raw.startswith(b"\xef\xbb\xbf"):
                text = raw[3:].decode("utf-8")
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("gb18030")
        elif enc == "utf-8":
            text = raw.decode("utf-8-sig")
        else:
            text = raw.decode(enc)
        lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=inp.get("delimiter", ",")))
        h = inp.get("header_row", 1)
        header = lines[h - 1]
        rows = [(h + 1 + i, dict(zip(header, line)), tuple(line)) for i, line in enumerate(lines[h:]) if line]
        return header, rows
    if fmt == "xlsx":
        wb = openpyxl.load_workbook(path)
        ws = wb[inp["sheet"]] if "sheet" in inp else wb.worksheets[0]
        h = inp.get("header_row", 1)
        header = [c.value for c in ws[h]]
        rows = []
        for r in ws.iter_rows(min_row=h + 1):
            vals = [c.value for c in r]
            if all(empty(v) for v in vals):
                continue
            rows.append((r[0].row, dict(zip(header, vals)), tuple(vals)))
        return header, rows
    if fmt == "jsonl":
        header, rows = None, []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if header is None:
                header = list(obj)
            elif list(obj) != header:
                print(f"  note: line {i} has keys {list(obj)}")
            rows.append((i, obj, line))
        return header, rows
    raise ValueError(fmt)


def placeholders(template):
    out, i = [], 0
    while (a := template.find("{", i)) >= 0:
        b = template.index("}", a)
        out.append(template[a + 1:b])
        i = b + 1
    return out


def check_mapping(mapping, header, rep, name):
    named = []
    for pointer, rule in mapping["fields"].items():
        if not pointer.startswith("/") or pointer.split("/")[1] not in TOP:
            rep.bad(name, f"pointer {pointer} is outside the lead")
        extra = set(rule) - RULE_KEYS
        if extra:
            rep.bad(name, f"{pointer}: unknown rule keys {extra}")
        kinds = [k for k in ("column", "value", "template") if k in rule]
        if len(kinds) != 1:
            rep.bad(name, f"{pointer}: a rule needs exactly one of column/value/template")
        if "column" in rule:
            named.append(rule["column"])
        if "template" in rule:
            named += placeholders(rule["template"])
        if "unit" in rule and (rule["unit"], rule.get("to")) not in UNITS:
            rep.bad(name, f"{pointer}: unknown unit {rule['unit']} -> {rule.get('to')}")
    if isinstance(mapping.get("kind"), dict):
        named.append(mapping["kind"]["column"])
    missing = [c for c in named if c not in header]
    for c in missing:
        rep.bad(name, f"column {c!r} is not in the header")
    return sorted(set(named)), missing


def to_text(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return str(v)


def apply_rule(rule, row, tz):
    """Returns (present, value): this checker's reading of the §2 rule forms."""
    if "value" in rule:
        return True, rule["value"]
    if "template" in rule:
        t = rule["template"]
        for c in placeholders(t):
            t = t.replace("{" + c + "}", "" if empty(row.get(c)) else to_text(row[c]))
        return True, t
    v = row.get(rule["column"])
    if rule.get("map_empty"):
        return (True, True) if empty(v) else (False, None)
    if empty(v):
        if "default" in rule:
            v = rule["default"]
        elif rule.get("optional"):
            return False, None
        else:
            return True, ""
    if isinstance(v, str):
        v = v.strip()
    if "map" in rule:
        if to_text(v) not in rule["map"]:
            raise ValueError(f"{rule['column']}: {v!r} is not in the map")
        return True, rule["map"][to_text(v)]
    if "unit" in rule:
        return True, float(v) * UNITS[(rule["unit"], rule["to"])]
    if "date_format" in rule:
        if isinstance(v, dt.datetime):
            d = v
        elif isinstance(v, dt.date):
            d = dt.datetime(v.year, v.month, v.day)
        else:
            d = dt.datetime.strptime(v, rule["date_format"])
        return True, d.replace(tzinfo=tz).isoformat()
    typ = rule.get("type", "string")
    if typ == "integer":
        f = float(v)
        if not f.is_integer():
            raise ValueError(f"{rule['column']}: {v!r} is not an integer")
        return True, int(f)
    if typ == "number":
        return True, float(v)
    if typ == "boolean":
        return True, bool(v)
    return True, to_text(v)


def set_pointer(doc, pointer, value):
    parts = pointer.split("/")[1:]
    cur = doc
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        nxt = [] if not last and parts[i + 1].isdigit() else {}
        if isinstance(cur, list):
            idx = int(p)
            while len(cur) <= idx:
                cur.append(None)
            if last:
                cur[idx] = value
            else:
                if cur[idx] is None:
                    cur[idx] = nxt
                cur = cur[idx]
        else:
            if last:
                cur[p] = value
            else:
                cur = cur.setdefault(p, nxt)


def parse_time(s):
    d = dt.datetime.fromisoformat(s)
    if d.tzinfo is None:
        raise ValueError("no offset")
    return d


def build_lead(mapping, row, tz):
    lead = {"lead_type": mapping["lead_type"], "schema_version": 1, "source": {"agency": mapping["agency"]},
            "attachments": list(mapping.get("attachments", []))}
    kind = mapping["kind"]
    lead["kind"] = kind if isinstance(kind, str) else kind["map"][row[kind["column"]]]
    for pointer, rule in mapping["fields"].items():
        present, value = apply_rule(rule, row, tz)
        if present:
            set_pointer(lead, pointer, value)
    return lead


def check_table(toml_path, data_path, rep, expect_duplicates):
    name = str(data_path.relative_to(REPO))
    mapping = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    print(f"{name}  (mapping {toml_path.name}: lead_type {mapping['lead_type']}, kind {mapping['kind']})")
    if mapping["agency"] != mapping["lead_type"].split(".")[0]:
        rep.bad(name, "agency and lead_type prefix differ")
    if mapping["fields"].get("/source/revision", {}).get("value") != 1:
        rep.bad(name, "revision is not the constant 1")
    if mapping["fields"]["/source/unit_division"]["value"] not in ZIBO | {"370300"}:
        rep.bad(name, "unit_division is not Zibo")
    tz = dt.timezone(dt.timedelta(hours=int(mapping["time_zone"][:3]), minutes=int(mapping["time_zone"][4:])))
    header, rows = read_rows(mapping, data_path)
    print(f"  header: {', '.join(map(str, header))}")
    named, missing = check_mapping(mapping, header, rep, name)
    print(f"  mapping names {len(named)} columns, {len(missing)} missing from the header")
    envelope = json.loads((SCHEMAS / "envelope.schema.json").read_text(encoding="utf-8"))
    facts = json.loads((SCHEMAS / "facts" / f"{mapping['lead_type']}.schema.json").read_text(encoding="utf-8"))
    ve = jsonschema.Draft202012Validator(envelope, format_checker=jsonschema.FormatChecker())
    vf = jsonschema.Draft202012Validator(facts, format_checker=jsonschema.FormatChecker())
    seen, ids, duplicates, leads = {}, {}, [], []
    for row_no, row, key in rows:
        where = f"{name}:{row_no}"
        if key in seen:
            duplicates.append((row_no, seen[key]))
            continue
        seen[key] = row_no
        try:
            lead = build_lead(mapping, row, tz)
        except Exception as e:  # noqa: BLE001
            rep.bad(where, f"mapping failed: {e}")
            continue
        leads.append((row_no, lead))
        for e in list(ve.iter_errors(lead)) + list(vf.iter_errors(lead["facts"])):
            rep.bad(where, f"schema: /{'/'.join(map(str, e.absolute_path))}: {e.message}")
        cid = lead["source"]["case_id"]
        if cid in ids:
            rep.bad(where, f"case id {cid} repeats row {ids[cid]}")
        ids[cid] = row_no
        div = lead["location"]["division_code"]
        if div not in ZIBO or DIVISIONS.get(div) != "county":
            rep.bad(where, f"division {div} is not a Zibo county-level code in force")
        for i, s in enumerate(lead["subjects"]):
            if s["type"] == "organization":
                if "uscc" in s and not uscc_ok(s["uscc"]):
                    rep.bad(where, f"subjects/{i} uscc {s['uscc']} fails GB 32100")
                if "uscc" not in s and s.get("uscc_unknown") is not True:
                    rep.bad(where, f"subjects/{i} has neither uscc nor uscc_unknown")
            else:
                if "id_number" in s and not id_ok(s["id_number"]):
                    rep.bad(where, f"subjects/{i} id {s['id_number']} fails GB 11643")
                if "id_number" not in s and s.get("id_unknown") is not True:
                    rep.bad(where, f"subjects/{i} has neither id_number nor id_unknown")
        try:
            occ, repd = parse_time(lead["occurred_at"]), parse_time(lead["reported_at"])
            if not (occ <= repd < LIMIT and occ.year == 2026):
                rep.bad(where, f"times out of order or range: {occ} / {repd}")
            if occ.utcoffset() != dt.timedelta(hours=8) or repd.utcoffset() != dt.timedelta(hours=8):
                rep.bad(where, "offset is not +08:00")
            if lead.get("penalty"):
                dec = parse_time(lead["penalty"]["decided_at"])
                if not occ <= dec <= repd:
                    rep.bad(where, f"decided_at {dec} not between occurred_at and reported_at")
        except (ValueError, KeyError) as e:
            rep.bad(where, f"time: {e}")
        f = lead["facts"]
        if mapping["lead_type"] == "land.farmland_occupation":
            areas = [f[k] for k in ("basic_farmland_m2", "other_cultivated_m2", "public_welfare_forest_m2",
                                    "commercial_forest_m2", "grassland_m2")]
            if not any(a > 0 for a in areas):
                rep.bad(where, "no area > 0")
    if len(duplicates) != expect_duplicates:
        rep.bad(name, f"{len(duplicates)} exact duplicate rows, expected {expect_duplicates}")
    for d, first in duplicates:
        print(f"  row {d} is an exact duplicate of row {first} (skipped)")
    print(f"  rows {len(rows)}, leads {len(leads)}, unique case ids {len(ids)}")
    return leads


def describe(lead_type, leads):
    for row_no, lead in leads:
        f = lead["facts"]
        s = lead["subjects"][0]
        code = s.get("uscc", "uscc_unknown")
        if lead_type == "land.farmland_occupation":
            b, o = f["basic_farmland_m2"] * 15 / 10000, f["other_cultivated_m2"] * 15 / 10000
            crim = (b >= 5 - 1e-6 or o >= 10 - 1e-6) and f["destroyed"]
            info = f"basic {b:.2f} 亩, other {o:.2f} 亩, destroyed {f['destroyed']}"
        elif lead_type == "water.illegal_sand_mining":
            v = f["value_cny"]
            crim = (f["in_river_management_area"] and not f["has_permit"]
                    and (v >= 100000 or (f["in_prohibited_zone_or_period"] and v >= 50000))
                    or f["flood_safety_harm_report"])
            info = (f"value {v:.0f} CNY, area {f['in_river_management_area']}, permit {f['has_permit']}, "
                    f"禁采 {f['in_prohibited_zone_or_period']}, flood {f['flood_safety_harm_report']}")
        elif lead_type == "safety.major_accident":
            crim = f["deaths"] >= 1 or f["serious_injuries"] >= 3 or f["direct_loss_cny"] >= 1000000
            info = f"deaths {f['deaths']}, serious {f['serious_injuries']}, loss {f['direct_loss_cny']:.0f} CNY"
        else:
            crim = f["quantity_t"] >= 3 - 1e-9
            info = (f"{f['waste_code']} {f['quantity_t']:g} t {f['disposal']}, fine "
                    f"{lead['penalty']['fine_cny']:.0f} CNY")
        print(f"    row {row_no:>2} {lead['source']['case_id']:<20} {lead['location']['division_code']} "
              f"{code:<18} {info}  {'meets a criminal threshold' if crim else 'below the thresholds'}")


def check_hj212(rep):
    for packet, crc in [(b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
                         b"CP=&&RtdInterval=30&&", 0x1C80),
                        (b"QN=20240601100000123;ST=32;CN=2061;PW=123456;MN=370303A00000000000000001;Flag=4;CP=&&"
                         b"DataTime=20240601090000;w01018-Min=18.2,w01018-Avg=21.5,w01018-Max=25.0,w01018-Cou=3.2,"
                         b"w01018-Flag=N;w21003-Min=0.80,w21003-Avg=1.05,w21003-Max=1.31,w21003-Cou=0.16,"
                         b"w21003-Flag=N&&", 0x8941)]:
        if crc16_hj212(packet) != crc:
            rep.bad("crc", "the CRC function does not reproduce the test packets")
    cfg = tomllib.loads((HERE / "environment" / "HJ212.toml").read_text(encoding="utf-8"))
    station = cfg["stations"][0]
    if not uscc_ok(station["uscc"]):
        rep.bad("HJ212.toml", "station uscc fails GB 32100")
    if station["division_code"] not in ZIBO or cfg["unit_division"] not in ZIBO | {"370300"}:
        rep.bad("HJ212.toml", "division code is not Zibo")
    raw = (HERE / "environment" / "hj212.capture").read_bytes()
    name = "connectors/samples/environment/hj212.capture"
    print(f"{name}  (config HJ212.toml: MN {station['mn']}, limits {station['limits']})")
    frames = raw.split(b"\r\n")
    if frames[-1] != b"":
        rep.bad(name, "does not end with CRLF")
    frames = frames[:-1]
    counts, exceed, max_only, minute_over, runs = {}, {}, [], [], {}
    current, prev_vals, flat = {}, {}, {}
    for i, fr in enumerate(frames, start=1):
        where = f"{name}:{i}"
        if not fr.startswith(b"##"):
            rep.bad(where, "no ##")
            continue
        n = int(fr[2:6])
        data, crc = fr[6:6 + n], fr[6 + n:]
        if len(crc) != 4 or len(data) != n:
            rep.bad(where, "length field wrong")
            continue
        if int(crc, 16) != crc16_hj212(data) or crc != crc.upper():
            rep.bad(where, "CRC mismatch")
        if n > 1024 or len(fr) + 2 > cfg["max_packet_bytes"]:
            rep.bad(where, "packet too long")
        text = data.decode("ascii")
        head, cp = text.split(";CP=&&")
        fields = dict(kv.split("=") for kv in head.split(";"))
        if fields["ST"] != "32" or fields["MN"] != station["mn"] or fields["PW"] != station["password"]:
            rep.bad(where, "ST/MN/PW do not match HJ212.toml")
        items = cp.rstrip("&").split(";")
        data_time = items[0].split("=")[1]
        if not data_time.startswith("202611"):
            rep.bad(where, f"DataTime {data_time} not in November 2026")
        cn = fields["CN"]
        counts[cn] = counts.get(cn, 0) + 1
        for group in items[1:]:
            kv = dict(x.split("=") for x in group.split(","))
            code = next(iter(kv)).split("-")[0]
            avg, mx, flag = float(kv[f"{code}-Avg"]), float(kv[f"{code}-Max"]), kv[f"{code}-Flag"]
            lim = station["limits"].get(code)
            if cn == "2061":
                if lim is not None and avg > lim:
                    exceed.setdefault(code, []).append(f"{data_time[8:10]}h {avg:g}")
                elif lim is not None and mx > lim:
                    max_only.append(f"{code} {data_time[8:10]}h Max {mx:g} (Avg {avg:g})")
                if flag in "MSCDB":
                    current[code] = current.get(code, 0) + 1
                    runs[code] = max(runs.get(code, 0), current[code])
                else:
                    current[code] = 0
                flat[code] = flat.get(code, 1) + 1 if prev_vals.get(code) == kv[f"{code}-Avg"] else 1
                prev_vals[code] = kv[f"{code}-Avg"]
                if flat[code] >= cfg["flatline_hours"]:
                    rep.bad(where, f"{code} flat-lined for {flat[code]} hours (unintended)")
            elif cn == "2051" and lim is not None and avg > lim:
                minute_over.append(f"{code} {data_time[8:12]} Avg {avg:g}")
    print(f"  packets {len(frames)}: " + ", ".join(f"CN={k} × {v}" for k, v in sorted(counts.items())))
    print("  all frames: length field = DATA length, CRC (HJ 212 Appendix A) matches, ST=32, MN/PW of the station")
    print(f"  hourly averages above the limit: {exceed}")
    print(f"  hourly -Max above the limit with -Avg below: {max_only}")
    print(f"  minute (CN 2051) averages above the limit: {minute_over}")
    print(f"  longest abnormal-flag run (hours): {runs}  (tampering_flag_hours = {cfg['tampering_flag_hours']})")


def main():
    rep = Report()
    samples = [("environment/penalties.toml", "environment/penalties.csv", 0),
               ("land/spots.toml", "land/spots.xlsx", 0),
               ("safety/express_reports.toml", "safety/express_reports.jsonl", 0),
               ("water/sand_mining.toml", "water/sand_mining.csv", 1)]
    for t, d, dups in samples:
        mapping = tomllib.loads((HERE / t).read_text(encoding="utf-8"))
        leads = check_table(HERE / t, HERE / d, rep, dups)
        describe(mapping["lead_type"], leads)
    # GBK: the penalty export must decode as GBK proper, not only GB18030.
    (HERE / "environment/penalties.csv").read_bytes().decode("gbk")
    check_hj212(rep)
    print(f"\n{rep.problems} problem(s)")
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
