"""Generate the example device inventory of Shuibei community (水贝社区), Shenzhen.

Shuibei (Cuizhu subdistrict, Luohu district) is the pilot community of sentinel. This script
writes its device inventory as the CSV that ``sentinel`` loads (``devices/shuibei.csv``):

* 747 smoke detectors (``smoke``): corridors and flats (elderly people living alone, rented
  flats) of 18 residential compounds, workshops/warehouses of 4 jewellery industrial parks,
  and the street shops;
* 93 combustible-gas detectors (``gas``): restaurant kitchens of the street shops, park
  canteens and residential kitchens;
* 83 fire-hydrant pressure monitors (``hydrant_pressure``) at outdoor hydrants;
* 41 fire-water tank/pool level monitors (``water_level``), one to three per compound or park;
* 41 smartwatches (``elderly_watch``) of elderly residents living alone.

Every compound belongs to one grid (网格, ``SB-G01``..``SB-G15``); the two largest residential
compounds are split over two grids by building. Each device speaks one vendor profile
(``sentinel-json``, ``zigbee2mqtt``, ``esphome``, ``lorawan-tts``), mixed per compound the way
installations happen in practice (one vendor per compound or building).

ALL DATA IS INVENTED: compound, park and shop-street names, buildings, flats and the names of
the elderly residents are made up for the example; no real person, address or phone number is
described. The output is deterministic for a given ``--seed``.

Every device carries the position of its building (``lat``, ``lon``, for the board's site
plan and the simulated watches): an invented, schematic layout inside Shuibei's box (the
simulator's centre ± 0.0025°), not a survey. The compounds and parks stand on a grid of
blocks, their buildings in rows about 25 m apart; the two shop streets run along the west
and the south edge, their shops on both sides of the street. The positions follow from the
compound's place in the lists and the building's number alone: they take nothing from the
random stream, so every other column is the same as without them. Copies 2..N of
``--scale`` stand in boxes of their own east and north of the first one.

``--scale N`` multiplies every device count by N (for benchmarks): copies 2..N are extra,
numbered compounds (``水贝花园（扩展002）``) in extra grids (``SB-X002-G01``), so ids stay
unique. Resident names stay unique until the pool of invented names (about 15,000) runs out.
``--devices N`` writes exactly N devices instead: as many copies as needed, the last one cut
short kind by kind so that every kind keeps its share (start-up benchmarks).

Usage::

    python scripts/gen_inventory.py [--out devices/shuibei.csv] [--seed N]
                                    [--scale N | --devices N]
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

COMMUNITY = "水贝社区"
COLUMNS = (
    "id", "kind", "community", "compound", "building", "floor", "unit", "grid", "location",
    "profile", "mount_height_m", "tank_height_m", "resident", "lat", "lon",
)
KINDS = ("smoke", "gas", "hydrant_pressure", "water_level", "elderly_watch")
ID_PREFIX = {
    "smoke": "SB-SMK", "gas": "SB-GAS", "hydrant_pressure": "SB-HYD",
    "water_level": "SB-TNK", "elderly_watch": "SB-WCH",
}
# Devices per kind in one copy of the community (--scale 1).
BASE_COUNTS = {
    "smoke": 747, "gas": 93, "hydrant_pressure": 83, "water_level": 41, "elderly_watch": 41,
}
# Share of each kind's devices per category of compound.
CATEGORY_SHARE = {
    "smoke": {"res": 0.65, "park": 0.27, "shop": 0.08},
    "gas": {"res": 0.40, "park": 0.15, "shop": 0.45},
    "hydrant_pressure": {"res": 0.62, "park": 0.26, "shop": 0.12},
}

RES, PARK, SHOP = "res", "park", "shop"
# Residential styles: "old" = 1980s/90s walk-ups, "tower" = high-rise estate,
# "village" = urban-village rental buildings (握手楼).
# (name, style, buildings, (min floors, max floors), flats per floor, grids)
RESIDENTIAL: tuple[tuple[str, str, int, tuple[int, int], int, tuple[str, ...]], ...] = (
    ("水贝花园", "tower", 12, (18, 28), 6, ("G01", "G02")),
    ("翠竹苑", "old", 9, (7, 8), 4, ("G03",)),
    ("贝丽花园", "tower", 10, (24, 32), 6, ("G04", "G05")),
    ("水贝新村", "village", 16, (6, 9), 3, ("G06", "G07")),
    ("翠荫家园", "old", 6, (7, 7), 4, ("G03",)),
    ("贝丽雅苑", "tower", 4, (26, 30), 8, ("G05",)),
    ("翠锦华庭", "tower", 5, (28, 33), 6, ("G08",)),
    ("金贝花园", "old", 8, (8, 9), 4, ("G09",)),
    ("翠馨居", "old", 4, (7, 8), 2, ("G08",)),
    ("宝贝名苑", "tower", 3, (18, 22), 8, ("G10",)),
    ("贝岭居", "old", 5, (7, 8), 4, ("G10",)),
    ("翠华苑", "old", 7, (8, 9), 4, ("G11",)),
    ("水贝一坊", "village", 10, (6, 8), 3, ("G07",)),
    ("洪贝雅轩", "tower", 3, (30, 33), 6, ("G11",)),
    ("翠北公寓", "old", 2, (9, 9), 10, ("G12",)),
    ("金丽华庭", "tower", 4, (22, 26), 6, ("G12",)),
    ("田贝雅居", "old", 6, (7, 8), 4, ("G09",)),
    ("翠宝花园", "old", 5, (7, 8), 4, ("G06",)),
)
# (name, buildings, (min floors, max floors), grid)
PARKS: tuple[tuple[str, int, tuple[int, int], str], ...] = (
    ("水贝珠宝产业园", 6, (6, 10), "G13"),
    ("贝丽珠宝工业区", 5, (5, 8), "G14"),
    ("翠宝黄金工业区", 4, (4, 7), "G14"),
    ("水贝国际珠宝创意园", 3, (8, 12), "G15"),
)
# (street, shops, grid)
SHOP_STREETS: tuple[tuple[str, int, str], ...] = (
    ("贝丽北路沿街商铺", 48, "G12"),
    ("水贝二路沿街商铺", 36, "G15"),
)
SHOP_TYPES = (
    ("餐饮店", 45), ("珠宝首饰店", 20), ("便利店", 8), ("五金店", 5), ("茶叶店", 5),
    ("快递驿站", 5), ("理发店", 6), ("维修店", 6),
)
PARK_ZONES_GROUND = ("走廊", "展厅", "配电房", "保安室", "仓库")
PARK_ZONES_UPPER = ("走廊", "1号车间", "2号车间", "抛光车间", "仓库", "办公区")
CANTEEN_SPOTS = ("1号灶台", "2号灶台", "3号灶台", "燃气表间", "蒸柜区")
DIRECTIONS = ("东侧", "西侧", "南侧", "北侧", "东北角", "西北角", "东南角", "西南角")

SURNAMES = (
    "陈", "李", "黄", "张", "王", "林", "刘", "吴", "郑", "杨", "何", "周", "梁", "谢", "许",
    "罗", "赵", "徐", "朱", "曾", "邓", "冯", "蔡", "叶", "钟", "彭", "卢", "苏", "胡", "郭",
    "马", "孙", "高", "肖", "潘", "袁", "董", "余", "杜", "魏", "唐", "韩", "曹", "沈", "蒋",
    "范", "廖", "方", "江", "石", "温", "丘", "邱", "赖", "庄", "侯", "姚", "汤", "莫", "詹",
    "欧阳", "司徒",
)
# The first surnames are the most common ones in Shenzhen; weights fall off along the list.
SURNAME_WEIGHTS = tuple(max(1.0, 12.0 - i * 0.5) for i in range(len(SURNAMES)))
FEMALE_GIVEN = (
    "秀英", "桂兰", "玉兰", "秀兰", "桂英", "淑珍", "凤英", "秀珍", "玉珍", "桂芳", "秀芳",
    "玉梅", "淑英", "素珍", "桂珍", "翠英", "金凤", "美华", "丽华", "月娥", "秀梅", "桂香",
    "玉英", "淑华", "凤兰", "兰英", "春梅", "冬梅", "素芬", "玉芬", "亚娣", "带娣", "惠珍",
    "瑞英", "杏芳", "彩霞", "银娣", "巧珍", "月英", "秀琼", "淑贞", "佩玲", "少芳", "丽娟",
    "英", "兰", "芳", "珍", "梅", "娟",
)
MALE_GIVEN = (
    "建国", "国强", "建华", "国华", "志强", "德明", "振华", "文华", "志明", "永明", "国庆",
    "建军", "德福", "福生", "永昌", "光明", "家明", "耀华", "锦荣", "伟强", "炳坤", "树林",
    "金生", "国良", "卫东", "海生", "德胜", "长根", "学文", "春生", "庆祥", "建平", "有才",
    "荣华", "汉生", "秋生", "国栋", "明德", "世杰", "启明", "强", "华", "明", "军", "忠",
)


@dataclass
class Building:
    name: str
    floors: int
    flats_per_floor: int
    grid: str


@dataclass
class Compound:
    name: str
    category: str  # RES, PARK or SHOP
    style: str
    buildings: list[Building]
    # Shop streets: one (door number, shop type) per shop; parks: the canteen's building/floor.
    shops: list[tuple[str, str]] = field(default_factory=list)
    canteen: tuple[int, int] = (0, 1)


@dataclass
class Row:
    """One device before ids are given out."""

    kind: str
    compound: Compound
    building: Building | None
    building_no: int
    floor: str
    unit: str
    location: str
    profile: str = "sentinel-json"
    mount_height_m: str = ""
    tank_height_m: str = ""
    resident: str = ""
    order: tuple[int, ...] = ()
    lat: str = ""
    lon: str = ""


def apportion(total: int, weights: Sequence[float], caps: Sequence[int],
              minimum: int = 0) -> list[int]:
    """Split ``total`` over the weights (highest averages), at least ``minimum`` (while the
    total allows) and never above a cap each."""
    if total > sum(caps):
        raise ValueError(f"cannot place {total} devices in {sum(caps)} places")
    counts = [0] * len(weights)
    for i in range(len(weights)):
        counts[i] = min(minimum, caps[i])
    if sum(counts) > total:
        counts = [0] * len(weights)
    for _ in range(total - sum(counts)):
        best = max(
            (i for i in range(len(weights)) if counts[i] < caps[i]),
            key=lambda i: weights[i] / (counts[i] + 1),
        )
        counts[best] += 1
    return counts


def pick(rng: random.Random, count: int, primary: list[T], secondary: list[T]) -> list[T]:
    """``count`` distinct items: primary ones first (random order), then secondary ones."""
    first = rng.sample(primary, min(count, len(primary)))
    rest = rng.sample(secondary, min(count - len(first), len(secondary)))
    return first + rest


def build_compounds(rng: random.Random, copy: int) -> list[Compound]:
    """The compounds of one copy of the community (copy 1 is the real layout)."""

    def named(name: str) -> str:
        return name if copy == 1 else f"{name}（扩展{copy:03d}）"

    def grid(code: str) -> str:
        return f"SB-{code}" if copy == 1 else f"SB-X{copy:03d}-{code}"

    compounds: list[Compound] = []
    for name, style, n_buildings, (lo, hi), flats, grids in RESIDENTIAL:
        buildings = [
            # Large compounds are split over their grids by building number.
            Building(f"{b + 1}栋", rng.randint(lo, hi), flats,
                     grid(grids[b * len(grids) // n_buildings]))
            for b in range(n_buildings)
        ]
        compounds.append(Compound(named(name), RES, style, buildings))
    for name, n_buildings, (lo, hi), code in PARKS:
        buildings = [
            Building(f"{chr(ord('A') + b)}座", rng.randint(lo, hi), 0, grid(code))
            for b in range(n_buildings)
        ]
        canteen = (rng.randrange(n_buildings), rng.choice((1, 2)))
        compounds.append(Compound(named(name), PARK, "park", buildings, canteen=canteen))
    types = [t for t, _ in SHOP_TYPES]
    type_weights = [w for _, w in SHOP_TYPES]
    for name, n_shops, code in SHOP_STREETS:
        doors = sorted(rng.sample(range(1, n_shops * 2 + 12), n_shops))
        shops = [(f"{d}号", rng.choices(types, type_weights)[0]) for d in doors]
        buildings = [Building(door, 1, 1, grid(code)) for door, _ in shops]
        compounds.append(Compound(named(name), SHOP, "shop", buildings, shops=shops))
    return compounds


# -- positions (derived from the compound lists, never from the random stream) -------------

# The simulator's centre of Shuibei (sentinel.sim.model SHUIBEI_LAT/LON) and the half sides
# of the box the buildings stand in, in metres (±0.0025° is about ±278 m north-south and
# ±257 m east-west at this latitude).
CENTRE_LAT, CENTRE_LON = 22.566, 114.127
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(CENTRE_LAT))
HALF_EW, HALF_NS = 252.0, 272.0
PITCH = 25.0  # between neighbouring buildings of a compound, and shops along a street
STREET_WIDTH = 30.0  # between the two rows of shops of a street
GAP_EW, GAP_NS = 40.0, 52.0  # between the buildings of neighbouring compounds
BLOCK_ROWS = 3  # rows of buildings in a block at most
# About the width of one character of a compound's name on the site plan (its font is a
# sixtieth of the plan, some 600 m): a block leaves room for its name, drawn at its top left.
LABEL_M = 11.0
COPY_STEP_DEG = 0.006  # between the boxes of the copies of --scale
COPIES_PER_ROW = 10


def _street_positions(n_shops: int, street: int) -> list[tuple[float, float]]:
    """Shops along a street, one on each side in turn (in door order): street 0 runs
    north-south along the west edge, street 1 east-west along the south edge."""
    per_side = (n_shops + 1) // 2
    if street == 0:
        length = 2 * HALF_NS
        step = min(PITCH, length / max(1, per_side - 1))
        return [(-HALF_EW + (i % 2) * STREET_WIDTH, HALF_NS - (i // 2) * step)
                for i in range(n_shops)]
    start = -HALF_EW + STREET_WIDTH + GAP_EW
    step = min(PITCH, (HALF_EW - start) / max(1, per_side - 1))
    return [(start + (i // 2) * step, -HALF_NS + (i % 2) * STREET_WIDTH)
            for i in range(n_shops)]


def _block_shape(n_buildings: int) -> tuple[int, int]:
    """(rows, buildings per row) of a compound: small ones in one or two rows."""
    rows = 1 if n_buildings <= 3 else 2 if n_buildings <= 5 else BLOCK_ROWS
    return rows, -(-n_buildings // rows)


def site_positions(compounds: Sequence[Compound]) -> dict[tuple[int, int], tuple[float, float]]:
    """Plan metres (x east, y north of the centre) of every (compound index, building
    number): the shop streets along two edges, the compounds and parks in blocks on shelves
    (rows of blocks) over the rest, the widest block first into the first shelf with room."""
    at: dict[tuple[int, int], tuple[float, float]] = {}
    streets = [i for i, c in enumerate(compounds) if c.category == SHOP]
    for street, ci in enumerate(streets):
        for b, xy in enumerate(_street_positions(len(compounds[ci].buildings), street % 2)):
            at[ci, b] = xy
    west = -HALF_EW
    if streets:  # east of the west street and of its name
        west += max(STREET_WIDTH + GAP_EW, _label(compounds[streets[0]]))
    blocks = [(ci, *_block_shape(len(c.buildings))) for ci, c in enumerate(compounds)
              if c.category != SHOP]
    blocks.sort(key=lambda blk: (-blk[2], blk[0]))
    shelves: list[float] = []  # where the next block of each shelf may start
    for ci, _, cols in blocks:
        width = (cols - 1) * PITCH
        shelf = next((k for k, x in enumerate(shelves) if x + width <= HALF_EW), None)
        if shelf is None:  # a new shelf south of the others (the box may run out: fine)
            shelves.append(west)
            shelf = len(shelves) - 1
        x = shelves[shelf]
        y = HALF_NS - shelf * ((BLOCK_ROWS - 1) * PITCH + GAP_NS)
        for b in range(len(compounds[ci].buildings)):
            at[ci, b] = (x + (b % cols) * PITCH, y - (b // cols) * PITCH)
        shelves[shelf] = x + max(width + GAP_EW, _label(compounds[ci]))
    return at


def _label(compound: Compound) -> float:
    """Metres from a block's first building to the next block's that leave its name room
    (the name of a copy's compound counts without its suffix)."""
    return LABEL_M * len(compound.name.split("（")[0]) + 6.0


def to_degrees(xy: tuple[float, float], copy: int) -> tuple[str, str]:
    """Plan metres of a copy's box as (lat, lon) text, 6 decimals (a decimetre)."""
    row, col = divmod(copy - 1, COPIES_PER_ROW)
    lat = CENTRE_LAT + row * COPY_STEP_DEG + xy[1] / M_PER_DEG_LAT
    lon = CENTRE_LON + col * COPY_STEP_DEG + xy[0] / M_PER_DEG_LON
    return f"{lat:.6f}", f"{lon:.6f}"


def flat_no(floor: int, k: int) -> str:
    return f"{floor}{k:02d}"


def street_of(compound: Compound) -> str:
    return compound.name.replace("沿街商铺", "")


def place_watches(rng: random.Random, compounds: list[Compound], total: int,
                  names: NamePool) -> tuple[list[Row], dict[str, list[tuple[int, int, int]]]]:
    """Watches of elderly people living alone; returns the rows and their flats by compound."""
    res = [c for c in compounds if c.category == RES]
    weights = [len(c.buildings) * (2.0 if c.style in ("old", "village") else 1.0) for c in res]
    counts = apportion(total, weights, [10_000] * len(res))
    rows: list[Row] = []
    elders: dict[str, list[tuple[int, int, int]]] = {}
    for compound, count in zip(res, counts, strict=True):
        flats = [
            (b, f, k)
            for b, bld in enumerate(compound.buildings)
            for f in range(1, bld.floors + 1)
            for k in range(1, bld.flats_per_floor + 1)
        ]
        # Elders in walk-ups tend to live on the lower floors.
        low = [x for x in flats if compound.style == "tower" or x[1] <= 4]
        low_set = set(low)
        high = [x for x in flats if x not in low_set]
        chosen = sorted(pick(rng, count, low, high))
        elders[compound.name] = chosen
        for b, f, k in chosen:
            bld = compound.buildings[b]
            resident = names.draw(rng)
            rows.append(Row(
                "elderly_watch", compound, bld, b, str(f), flat_no(f, k),
                f"{compound.name}{bld.name}{f}楼{flat_no(f, k)}室（独居老人）",
                resident=resident,
            ))
    return rows, elders


def residential_flat_rows(rng: random.Random, compound: Compound, kind: str, count: int,
                          elders: list[tuple[int, int, int]]) -> list[Row]:
    """Smoke or gas detectors in a residential compound."""
    flats = [
        (b, f, k)
        for b, bld in enumerate(compound.buildings)
        for f in range(1, bld.floors + 1)
        for k in range(1, bld.flats_per_floor + 1)
    ]
    elder_set = set(elders)
    others = [x for x in flats if x not in elder_set]
    rows: list[Row] = []
    if kind == "gas":
        for b, f, k in pick(rng, count, list(elders), others):
            bld = compound.buildings[b]
            rows.append(Row(kind, compound, bld, b, str(f), flat_no(f, k),
                            f"{compound.name}{bld.name}{f}楼{flat_no(f, k)}室厨房"))
        return rows
    corridors = [
        (b, f, 0) for b, bld in enumerate(compound.buildings) for f in range(1, bld.floors + 1)
    ]
    # Corridors and (rented) flats compete for the rest; urban villages are mostly rentals.
    rental_share = 0.8 if compound.style == "village" else 0.5
    n_rest = max(0, count - len(elders))
    n_corridors = min(len(corridors), n_rest - round(n_rest * rental_share))
    n_flats = min(len(others), n_rest - n_corridors)
    rest = rng.sample(others, n_flats) + rng.sample(corridors, n_corridors)
    for b, f, k in pick(rng, count, list(elders), rest):
        bld = compound.buildings[b]
        where = f"{compound.name}{bld.name}{f}楼"
        if k == 0:
            rows.append(Row(kind, compound, bld, b, str(f), "走廊", f"{where}走廊"))
            continue
        if (b, f, k) in elder_set:
            room = "客厅"
        elif compound.style == "village":
            room = "（出租屋）"
        else:
            room = rng.choice(("客厅", "客厅", "卧室"))
        rows.append(Row(kind, compound, bld, b, str(f), flat_no(f, k),
                        f"{where}{flat_no(f, k)}室{room}"))
    return rows


def park_rows(rng: random.Random, compound: Compound, kind: str, count: int) -> list[Row]:
    """Smoke detectors in workshops/warehouses, gas detectors in the canteen."""
    rows: list[Row] = []
    if kind == "gas":
        b, f = compound.canteen
        bld = compound.buildings[b]
        for spot in pick(rng, count, list(CANTEEN_SPOTS[:3]), list(CANTEEN_SPOTS[3:])):
            rows.append(Row(kind, compound, bld, b, str(f), "食堂",
                            f"{compound.name}{bld.name}{f}楼员工食堂后厨{spot}"))
        return rows
    slots = [
        (b, f, zone)
        for b, bld in enumerate(compound.buildings)
        for f in range(1, bld.floors + 1)
        for zone in (PARK_ZONES_GROUND if f == 1 else PARK_ZONES_UPPER)
    ]
    for b, f, zone in rng.sample(slots, count):
        bld = compound.buildings[b]
        rows.append(Row(kind, compound, bld, b, str(f), zone,
                        f"{compound.name}{bld.name}{f}楼{zone}"))
    return rows


def shop_rows(rng: random.Random, compound: Compound, kind: str, count: int) -> list[Row]:
    """Smoke detectors in the shops, gas detectors in the restaurant kitchens."""
    street = street_of(compound)
    if kind == "gas":
        spots = ("后厨", "液化气瓶间")
        restaurants = [i for i, (_, t) in enumerate(compound.shops) if t == "餐饮店"]
        primary = [(i, spots[0]) for i in restaurants]
        secondary = [(i, spots[1]) for i in restaurants]
    else:
        primary = [(i, "铺面") for i in range(len(compound.shops))]
        secondary = [(i, "阁楼仓储") for i in range(len(compound.shops))]
    rows: list[Row] = []
    for i, spot in pick(rng, count, primary, secondary):
        door, shop_type = compound.shops[i]
        rows.append(Row(kind, compound, compound.buildings[i], i, "1", spot,
                        f"{street}{door}{shop_type}{spot}"))
    return rows


def capacity(compound: Compound, kind: str) -> int:
    if compound.category == SHOP:
        restaurants = sum(1 for _, t in compound.shops if t == "餐饮店")
        return 2 * (restaurants if kind == "gas" else len(compound.shops))
    if compound.category == PARK:
        if kind == "gas":
            return len(CANTEEN_SPOTS)
        if kind == "hydrant_pressure":
            return len(compound.buildings) * len(DIRECTIONS)
        return sum(b.floors for b in compound.buildings) * len(PARK_ZONES_UPPER) // 2
    if kind == "hydrant_pressure":
        return len(compound.buildings) * len(DIRECTIONS)
    return sum(b.floors * b.flats_per_floor for b in compound.buildings) // 2


def size(compound: Compound) -> float:
    if compound.category == SHOP:
        return float(len(compound.shops))
    return float(sum(b.floors * max(1, b.flats_per_floor) for b in compound.buildings))


def indoor_rows(rng: random.Random, compounds: list[Compound], kind: str, total: int,
                elders: dict[str, list[tuple[int, int, int]]]) -> list[Row]:
    rows: list[Row] = []
    shares = CATEGORY_SHARE[kind]
    cat_counts = apportion(total, [shares[RES], shares[PARK], shares[SHOP]], [total] * 3)
    for category, cat_total in zip((RES, PARK, SHOP), cat_counts, strict=True):
        members = [c for c in compounds if c.category == category]
        if kind == "gas" and category == SHOP:
            weights = [float(capacity(c, kind)) for c in members]
        elif category == RES:
            # Old walk-ups and urban villages are where the subdistrict installs most.
            # (High-rise estates already have building fire-alarm systems.)
            factor = {"old": 3.0, "village": 5.0, "tower": 0.6}
            weights = [size(c) * factor[c.style] for c in members]
        else:
            weights = [size(c) for c in members]
        counts = apportion(cat_total, weights, [capacity(c, kind) for c in members])
        for compound, count in zip(members, counts, strict=True):
            if category == RES:
                rows += residential_flat_rows(rng, compound, kind, count,
                                              elders.get(compound.name, []))
            elif category == PARK:
                rows += park_rows(rng, compound, kind, count)
            else:
                rows += shop_rows(rng, compound, kind, count)
    return rows


def hydrant_rows(rng: random.Random, compounds: list[Compound], total: int) -> list[Row]:
    shares = CATEGORY_SHARE["hydrant_pressure"]
    cat_counts = apportion(total, [shares[RES], shares[PARK], shares[SHOP]], [total] * 3)
    rows: list[Row] = []
    for category, cat_total in zip((RES, PARK, SHOP), cat_counts, strict=True):
        members = [c for c in compounds if c.category == category]
        weights = [float(len(c.buildings)) for c in members]
        caps = [capacity(c, "hydrant_pressure") for c in members]
        # Every compound and park has at least a few monitored hydrants.
        counts = apportion(cat_total, weights, caps, minimum=2 if category != SHOP else 1)
        for compound, count in zip(members, counts, strict=True):
            if category == SHOP:
                street = street_of(compound)
                for i in sorted(rng.sample(range(len(compound.buildings)), count)):
                    bld = compound.buildings[i]
                    rows.append(Row("hydrant_pressure", compound, bld, i, "", "",
                                    f"{street}{bld.name}门前消火栓"))
                continue
            # One hydrant per building first, then more around the larger ones.
            n = len(compound.buildings)
            primary = [(b, rng.randrange(len(DIRECTIONS))) for b in range(n)]
            secondary = [(b, d) for b in range(n) for d in range(len(DIRECTIONS))
                         if (b, d) not in primary]
            for b, d in pick(rng, count, primary, secondary):
                bld = compound.buildings[b]
                rows.append(Row("hydrant_pressure", compound, bld, b, "", "",
                                f"{compound.name}{bld.name}{DIRECTIONS[d]}消火栓"))
    return rows


def tank_rows(rng: random.Random, compounds: list[Compound], total: int) -> list[Row]:
    members = [c for c in compounds if c.category != SHOP]
    # One tank or pool each, the rest (up to three) for the larger compounds and the parks.
    weights = [len(c.buildings) * (1.0 if c.style in ("old", "village") else 2.0)
               for c in members]
    extra = apportion(total - len(members), weights, [2] * len(members))
    rows: list[Row] = []
    for compound, more in zip(members, extra, strict=True):
        by_height = sorted(range(len(compound.buildings)),
                           key=lambda b: -compound.buildings[b].floors)
        roofs = [(b, "roof") for b in by_height]
        # Walk-ups and urban-village buildings have rooftop tanks only; high-rise estates and
        # parks have a basement fire pool as well.
        has_pool = compound.style in ("tower", "park")
        slots = [(by_height[0], "pool"), *roofs] if has_pool else roofs
        for b, what in slots[: 1 + more]:
            bld = compound.buildings[b]
            if what == "pool":
                tank = round(rng.uniform(3.5, 6.0), 1)
                floor, unit = "-1", "地下室"
                location = f"{compound.name}{bld.name}地下消防水池"
            else:
                tank = round(rng.uniform(2.9, 3.6), 1)
                floor, unit = "", "屋顶"
                location = f"{compound.name}{bld.name}屋顶消防水箱"
            rows.append(Row("water_level", compound, bld, b, floor, unit, location,
                            tank_height_m=f"{tank:.1f}"))
    return rows


class NamePool:
    """Invented names of elderly residents, unique while the pool lasts."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def draw(self, rng: random.Random) -> str:
        for _ in range(200):
            surname = rng.choices(SURNAMES, SURNAME_WEIGHTS)[0]
            # Most elderly people living alone are women.
            given = rng.choice(FEMALE_GIVEN if rng.random() < 0.65 else MALE_GIVEN)
            name = surname + given
            if name not in self.used:
                self.used.add(name)
                return name
        unused = [s + g for s in SURNAMES for g in FEMALE_GIVEN + MALE_GIVEN
                  if s + g not in self.used]
        name = rng.choice(unused) if unused else surname + given
        self.used.add(name)
        return name


def assign_profile(rows: list[Row], profile: str, share: float, eligible: Callable[[Row], bool],
                   rank: dict[str, int]) -> None:
    """Give ``profile`` to ``share`` of the rows, compound by compound (in ``rank`` order)."""
    quota = round(share * len(rows))
    candidates = [r for r in rows if r.profile == "sentinel-json" and eligible(r)]
    candidates.sort(key=lambda r: (rank[r.compound.name], r.building_no))
    for row in candidates[:quota]:
        row.profile = profile


def assign_profiles(rng: random.Random, compounds: list[Compound], rows: list[Row]) -> None:
    order = [c.name for c in compounds]
    rng.shuffle(order)
    rank = {name: i for i, name in enumerate(order)}
    by_kind = {kind: [r for r in rows if r.kind == kind] for kind in KINDS}

    def is_(category: str) -> Callable[[Row], bool]:
        return lambda r: r.compound.category == category

    def anywhere(_: Row) -> bool:
        return True

    assign_profile(by_kind["smoke"], "lorawan-tts", 0.25, is_(PARK), rank)
    assign_profile(by_kind["smoke"], "zigbee2mqtt", 0.15, is_(RES), rank)
    assign_profile(by_kind["gas"], "zigbee2mqtt", 0.30, is_(RES), rank)
    assign_profile(by_kind["hydrant_pressure"], "esphome", 0.20, is_(PARK), rank)
    assign_profile(by_kind["hydrant_pressure"], "lorawan-tts", 0.50, anywhere, rank)
    assign_profile(by_kind["water_level"], "lorawan-tts", 0.60, anywhere, rank)
    for row in by_kind["water_level"]:
        if row.profile == "lorawan-tts":
            # Ultrasonic sensor under the tank lid: a little above the tank's top.
            mount = float(row.tank_height_m) + rng.choice((0.3, 0.4, 0.5))
            row.mount_height_m = f"{mount:.1f}"


def generate_copy(seed: int, copy: int, names: NamePool) -> list[Row]:
    rng = random.Random(seed * 1_000_003 + copy)
    compounds = build_compounds(rng, copy)
    watches, elders = place_watches(rng, compounds, BASE_COUNTS["elderly_watch"], names)
    rows = indoor_rows(rng, compounds, "smoke", BASE_COUNTS["smoke"], elders)
    rows += indoor_rows(rng, compounds, "gas", BASE_COUNTS["gas"], elders)
    rows += hydrant_rows(rng, compounds, BASE_COUNTS["hydrant_pressure"])
    rows += tank_rows(rng, compounds, BASE_COUNTS["water_level"])
    rows += watches
    assign_profiles(rng, compounds, rows)
    index = {c.name: i for i, c in enumerate(compounds)}
    at = site_positions(compounds)
    for row in rows:
        ci = index[row.compound.name]
        # A device of no building stands where its compound's first building does.
        xy = at[ci, row.building_no] if row.building is not None else at[ci, 0]
        row.lat, row.lon = to_degrees(xy, copy)
        floor = int(row.floor) if row.floor.lstrip("-").isdigit() else 999
        row.order = (copy, index[row.compound.name], row.building_no, floor)
    return rows


def kind_quotas(devices: int) -> dict[str, int]:
    """Devices per kind for exactly ``devices`` devices: whole copies of the community, and
    the remainder shared out like one copy (so every kind keeps its proportion)."""
    per_copy = sum(BASE_COUNTS.values())
    whole, rest = divmod(devices, per_copy)
    counts = list(BASE_COUNTS.values())
    extra = apportion(rest, [float(c) for c in counts], counts)
    return {kind: whole * count + more
            for kind, count, more in zip(BASE_COUNTS, counts, extra, strict=True)}


def generate(seed: int, scale: int, devices: int | None = None) -> list[dict[str, str]]:
    """Rows of ``scale`` copies of the community; with ``devices``, exactly that many (as many
    copies as needed, the last one cut short kind by kind)."""
    quotas: dict[str, int] | None = None
    if devices is not None:
        scale = max(1, -(-devices // sum(BASE_COUNTS.values())))
        quotas = kind_quotas(devices)
    names = NamePool()
    rows: list[Row] = []
    for copy in range(1, scale + 1):
        rows += generate_copy(seed, copy, names)
    out: list[dict[str, str]] = []
    for kind in KINDS:
        of_kind = sorted((r for r in rows if r.kind == kind), key=lambda r: (r.order, r.unit))
        if quotas is not None:
            of_kind = of_kind[:quotas[kind]]  # sorted by copy first: the last copy is cut
        width = max(4, len(str(len(of_kind))))
        for n, row in enumerate(of_kind, start=1):
            assert row.building is not None
            out.append({
                "id": f"{ID_PREFIX[kind]}-{n:0{width}d}",
                "kind": kind,
                "community": COMMUNITY,
                "compound": row.compound.name,
                "building": row.building.name,
                "floor": row.floor,
                "unit": row.unit,
                "grid": row.building.grid,
                "location": row.location,
                "profile": row.profile,
                "mount_height_m": row.mount_height_m,
                "tank_height_m": row.tank_height_m,
                "resident": row.resident,
                "lat": row.lat,
                "lon": row.lon,
            })
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("devices/shuibei.csv"),
                        help="CSV file to write (default: devices/shuibei.csv)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed")
    parser.add_argument("--scale", type=int, default=1,
                        help="multiply device counts by N with extra numbered compounds/grids")
    parser.add_argument("--devices", type=int,
                        help="exactly N devices (instead of --scale): as many copies as "
                             "needed, the last one cut short, every kind in proportion")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    if args.devices is not None and args.devices < 1:
        parser.error("--devices must be at least 1")
    rows = generate(args.seed, args.scale, args.devices)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    counts = {kind: sum(1 for r in rows if r["kind"] == kind) for kind in KINDS}
    print(f"wrote {len(rows)} devices to {args.out}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
