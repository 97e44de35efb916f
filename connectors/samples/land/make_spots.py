#!/usr/bin/env python3
"""Regenerates spots.xlsx: a 卫片执法图斑 list as the Zibo natural-resources bureau
exports it (sheet 图斑; title in row 1, header in row 2; areas in 亩).

- 发现日期 is a real Excel date cell; 上报时间 is text ("2026-11-05 09:30");
- 行政区划代码 is a number cell (370303), as the export writes it;
- an empty 永久基本农田/其他耕地/两年内处罚次数 cell means 0 (the mapping's default);
- one 用地单位 has no credit code (the mapping sets uscc_unknown).

Needs openpyxl (pip install openpyxl). Run: python3 make_spots.py
"""
import datetime as dt
import os

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font

TITLE = "2026年第三季度卫片执法图斑清单"
HEADER = ["序号", "图斑编号", "行政区划代码", "县（区）", "乡镇（街道）", "坐落", "用地单位", "统一社会信用代码",
          "发现日期", "上报时间", "地类", "建设内容", "图斑面积（亩）", "永久基本农田（亩）", "其他耕地（亩）",
          "是否改变用途", "是否毁坏", "两年内处罚次数", "备注"]
D = dt.date
# 图斑编号, code, 县, 乡镇, 坐落, 用地单位, USCC, 发现日期, 上报时间, 地类, 建设内容,
# 图斑面积, 永久基本农田, 其他耕地, 改变用途, 毁坏, 两年内处罚次数, 备注
ROWS = [
    ("370303-2026Q3-0012", 370303, "张店区", "马尚街道", "张店区马尚街道某某村东", "淄博某某物流有限公司",
     "91370303MA323HUM84", D(2026, 7, 8), "2026-10-16 09:30", "水浇地", "硬化场地、建设仓储棚",
     8.62, 6.15, 2.47, "是", "是", 0, ""),
    ("370305-2026Q3-0027", 370305, "临淄区", "凤凰镇", "临淄区凤凰镇某某村北", "淄博某某仓储有限公司",
     "91370305MA39B0YP1K", D(2026, 7, 15), "2026-10-16 09:30", "水浇地、旱地", "建设钢结构仓库",
     14.30, None, 12.80, "是", "是", 1, "图斑内另有1.50亩建设用地"),
    ("370302-2026Q3-0008", 370302, "淄川区", "昆仑镇", "淄川区昆仑镇某某村西", "淄博某某耐火材料有限公司",
     "91370302MA385DDL74", D(2026, 7, 22), "2026-10-23 14:00", "旱地", "堆放原料",
     3.45, 1.20, 2.25, "是", "否", 0, ""),
    ("370321-2026Q3-0019", 370321, "桓台县", "果里镇", "桓台县果里镇某某村西", "淄博某某建材有限公司",
     "91370321MA35EQEC1W", D(2026, 8, 3), "2026-10-23 14:00", "水浇地", "硬化地面建设砂石料场",
     7.69, 5.88, 1.81, "是", "是", 2, ""),
    ("370322-2026Q3-0031", 370322, "高青县", "花沟镇", "高青县花沟镇某某村南", "高青县某某养殖场（未登记）",
     None, D(2026, 8, 11), "2026-11-05 09:30", "水浇地", "建设养殖棚舍",
     4.10, None, 4.10, "是", "否", None, "设施农业用地未备案"),
    ("370306-2026Q3-0006", 370306, "周村区", "王村镇", "周村区王村镇某某村东南", "淄博某某机械有限公司",
     "91370306MA3QTYQR3U", D(2026, 8, 19), "2026-11-05 09:30", "水浇地、旱地", "建设生产厂房",
     22.70, 9.35, 11.04, "是", "是", 0, "图斑内另有2.31亩建设用地"),
    ("370304-2026Q3-0004", 370304, "博山区", "域城镇", "博山区域城镇某某村北", "淄博某某陶瓷有限公司",
     "91370304MA32870Y5P", D(2026, 8, 27), "2026-11-05 09:30", "旱地", "硬化场地堆放成品",
     1.86, None, 1.86, "是", "否", None, ""),
    ("370323-2026Q3-0015", 370323, "沂源县", "南麻街道", "沂源县南麻街道某某村西", "淄博某某果品有限公司",
     "91370323MA3P9BFL1H", D(2026, 9, 4), "2026-11-12 10:15", "果园、水浇地", "建设冷库",
     6.20, 5.00, 0.00, "是", "是", 0, "图斑内另有1.20亩园地"),
    ("370305-2026Q3-0033", 370305, "临淄区", "皇城镇", "临淄区皇城镇某某村东", "淄博某某再生资源有限公司",
     "91370305MA3RQK5B5W", D(2026, 9, 16), "2026-11-12 10:15", "水浇地", "堆放废旧物资",
     10.00, None, 10.00, "是", "否", 1, ""),
    ("370302-2026Q3-0014", 370302, "淄川区", "双杨镇", "淄川区双杨镇某某村南", "淄博某某新能源科技有限公司",
     "91370302MA397W903T", D(2026, 9, 25), "2026-11-19 16:40", "旱地", "建设光伏板支架及附属设施",
     31.50, None, 28.70, "是", "否", 1, "图斑内另有2.80亩其他草地"),
]


def main():
    wb = Workbook()
    ws = wb.active
    ws.title = "图斑"
    ws.append([TITLE])
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(HEADER))
    ws["A1"].font = Font(bold=True, size=14)
    ws["A1"].alignment = Alignment(horizontal="center")
    ws.append(HEADER)
    for cell in ws[2]:
        cell.font = Font(bold=True)
    for i, row in enumerate(ROWS, start=1):
        ws.append([i, *row])
        r = ws.max_row
        ws.cell(r, 9).number_format = "yyyy/m/d"           # 发现日期: a date cell
        ws.cell(r, 10).number_format = "@"                 # 上报时间: text
        for c in (13, 14, 15):
            ws.cell(r, c).number_format = "0.00"
    widths = [6, 20, 14, 9, 12, 26, 30, 22, 12, 18, 14, 24, 14, 16, 14, 12, 10, 14, 26]
    for col, width in zip("ABCDEFGHIJKLMNOPQRS", widths):
        ws.column_dimensions[col].width = width
    ws.freeze_panes = "A3"
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spots.xlsx")
    wb.save(out)
    print(f"wrote {len(ROWS)} spots to {out}")


if __name__ == "__main__":
    main()
