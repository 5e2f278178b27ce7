"""Item catalog of the synthetic shop: hashed random draws, a category taxonomy, Zipf popularity, titles and
deterministic promotions.

Every random number is a hash of ``(seed, salt, keys)``, never ``F.rand``: the same seed gives the same shop
on any cluster, whatever the partitioning. The taxonomy lives in code (small, reviewed with the docs in
docs/synthetic_shop.md); only sizes and rates come from config.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from shopformer.schemas import require_columns

_HASH_SCALE = 1 << 53
PRODUCT_ID_BASE = 1_000_000
CATEGORY_ID_BASE = 2_053_013_550_000_000_000  # REES46-like 19-digit category ids
PRICE_JITTER = 0.03  # daily +-3% price noise on top of promotions


def uniform(seed: int, salt: int, *keys: Column) -> Column:
    """Uniform draw in (0, 1) from a hash: same (seed, salt, keys) -> same number, on any partitioning."""
    h = F.xxhash64(F.lit(seed), F.lit(salt), *keys)
    return (F.pmod(h, F.lit(_HASH_SCALE)).cast("double") + F.lit(0.5)) / F.lit(float(_HASH_SCALE))


def normal(seed: int, salt: int, *keys: Column) -> Column:
    """Standard normal draw (Box-Muller over two hashed uniforms)."""
    u1, u2 = uniform(seed, salt, *keys, F.lit(1)), uniform(seed, salt, *keys, F.lit(2))
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2 * math.pi) * u2)


@dataclass(frozen=True)
class Category:
    code: str
    weight: float  # relative share of shopping missions
    median_price: float
    nouns: tuple[str, ...]
    brands: tuple[str, ...]  # most popular first


TAXONOMY: tuple[Category, ...] = (
    Category(
        "electronics.smartphone", 16, 280, ("smartphone",), ("samsung", "apple", "xiaomi", "huawei", "oppo")
    ),
    Category(
        "electronics.audio.headphone", 7, 60, ("headphones", "earbuds"), ("sony", "jbl", "apple", "samsung")
    ),
    Category("electronics.video.tv", 5, 450, ("tv", "smart tv"), ("samsung", "lg", "sony", "tcl")),
    Category("electronics.clocks", 4, 150, ("smartwatch", "watch"), ("apple", "samsung", "garmin", "casio")),
    Category("computers.notebook", 6, 750, ("laptop", "notebook"), ("lenovo", "hp", "asus", "acer", "apple")),
    Category(
        "computers.peripherals.mouse", 3, 25, ("mouse", "wireless mouse"), ("logitech", "razer", "a4tech")
    ),
    Category("computers.components.videocards", 2, 400, ("graphics card",), ("msi", "gigabyte", "asus")),
    Category(
        "appliances.kitchen.refrigerators", 4, 600, ("refrigerator",), ("lg", "samsung", "bosch", "beko")
    ),
    Category(
        "appliances.kitchen.kettle", 4, 35, ("kettle", "electric kettle"), ("tefal", "philips", "bosch")
    ),
    Category(
        "appliances.kitchen.washer", 3, 420, ("washing machine",), ("lg", "samsung", "bosch", "indesit")
    ),
    Category(
        "appliances.environment.vacuum", 4, 180, ("vacuum cleaner", "robot vacuum"), ("dyson", "xiaomi")
    ),
    Category("appliances.personal.hair_cutter", 2, 40, ("hair clipper", "trimmer"), ("philips", "braun")),
    Category(
        "apparel.shoes.sneakers", 7, 90, ("sneakers", "running shoes"), ("nike", "adidas", "puma", "asics")
    ),
    Category("apparel.jeans", 4, 60, ("jeans",), ("levis", "wrangler", "lee", "diesel")),
    Category("apparel.jacket", 3, 120, ("jacket", "parka"), ("columbia", "patagonia", "zara")),
    Category("furniture.living_room.sofa", 3, 500, ("sofa", "couch"), ("ikea", "hoff", "askona")),
    Category("furniture.bedroom.bed", 2, 350, ("bed", "bed frame"), ("ikea", "askona", "ormatek")),
    Category("kids.toys", 5, 30, ("toy set", "building kit", "doll"), ("lego", "hasbro", "mattel")),
    Category("sport.bicycle", 3, 380, ("bicycle", "mountain bike"), ("stels", "trek", "giant", "merida")),
    Category("construction.tools.drill", 3, 90, ("drill", "cordless drill"), ("bosch", "makita", "dewalt")),
    Category("auto.accessories.player", 2, 70, ("car stereo",), ("pioneer", "kenwood", "sony")),
    Category("beauty.skin_care", 5, 15, ("face cream", "serum"), ("nivea", "loreal", "garnier", "vichy")),
    Category("accessories.bag", 3, 55, ("backpack", "bag"), ("samsonite", "xiaomi", "puma")),
    Category("stationery.cartrige", 2, 30, ("ink cartridge",), ("hp", "canon", "epson")),
)
ADJECTIVES = ("Compact", "Classic", "Premium", "Ultra", "Smart", "Pro", "Essential", "Urban", "Lite", "Max")

ITEMS = StructType(
    [
        StructField("product_id", LongType(), False),
        StructField("category_id", LongType(), False),
        StructField("category_code", StringType(), False),
        StructField("brand", StringType(), False),
        StructField("title", StringType(), False),
        StructField("base_price", DoubleType(), False),
        StructField("popularity", DoubleType(), False),  # P(item) of a mission view: category share x Zipf
        StructField("promo_period_days", IntegerType(), False),
        StructField("promo_length_days", IntegerType(), False),  # 0: the item never runs a promotion
        StructField("promo_offset_days", IntegerType(), False),
        StructField("promo_depth", DoubleType(), False),  # discount fraction while on promotion
        StructField("category_code_logged", BooleanType(), False),  # False: raw logs carry an empty code
        StructField("brand_logged", BooleanType(), False),
    ]
)


def category_id(code: str) -> int:
    """Stable REES46-like numeric id of a category code (independent of the seed and the catalog size)."""
    return CATEGORY_ID_BASE + int(hashlib.md5(code.encode()).hexdigest()[:12], 16) % 10**13


def _lits(values: list[float] | list[int] | list[str]) -> Column:
    return F.array(*[F.lit(v) for v in values])


@dataclass(frozen=True)
class CatalogLayout:
    """Categories in use and their contiguous product-index blocks (sizes ~ weight, each >= 1 item).

    Contiguous blocks let a mission pick "the r-th most popular item of category c" arithmetically, with no
    join against the catalog."""

    categories: tuple[Category, ...]
    starts: tuple[int, ...]
    sizes: tuple[int, ...]
    zipf_exponent: float

    @classmethod
    def build(cls, n_items: int, zipf_exponent: float) -> CatalogLayout:
        cats = TAXONOMY[: max(1, min(n_items, len(TAXONOMY)))]
        total = sum(c.weight for c in cats)
        sizes = [1 + int((n_items - len(cats)) * c.weight / total) for c in cats]
        sizes[0] += n_items - sum(sizes)  # rounding remainder goes to the biggest category
        starts = [sum(sizes[:i]) for i in range(len(cats))]
        return cls(tuple(cats), tuple(starts), tuple(sizes), zipf_exponent)

    @property
    def codes(self) -> Column:
        return _lits([c.code for c in self.categories])

    def category_of(self, index: Column) -> Column:
        """Category (0-based) of a product index."""
        return F.size(F.filter(_lits(list(self.starts[1:])), lambda s: s <= index)).cast("int")

    def pick_category(self, u: Column) -> Column:
        """Category drawn with probability proportional to its weight."""
        total = sum(c.weight for c in self.categories)
        cum = [
            sum(c.weight for c in self.categories[: i + 1]) / total for i in range(len(self.categories) - 1)
        ]
        return F.size(F.filter(_lits(cum), lambda c: c <= u)).cast("int")

    def start_of(self, cat: Column) -> Column:
        return F.element_at(_lits(list(self.starts)), cat + 1).cast("long")

    def size_of(self, cat: Column) -> Column:
        return F.element_at(_lits(list(self.sizes)), cat + 1).cast("long")

    def pick_item(self, cat: Column, u: Column) -> Column:
        """Product index: Zipf-like rank r within the category (P(r) ~ (r + 1)^-s), by inverse CDF."""
        n, s = self.size_of(cat), self.zipf_exponent
        if abs(s - 1.0) < 1e-9:
            x = F.pow(n + 1, u)
        else:
            x = F.pow(1 + u * (F.pow(n + 1, F.lit(1 - s)) - 1), F.lit(1 / (1 - s)))
        rank = F.least(F.floor(x).cast("long") - 1, n - 1)
        return self.start_of(cat) + rank

    def item_popularity(self, cat: Column, index: Column) -> Column:
        """Probability that a mission view lands on this item (category weight x within-category Zipf)."""
        n, s, rank = self.size_of(cat), self.zipf_exponent, index - self.start_of(cat)
        total = sum(c.weight for c in self.categories)
        weight = F.element_at(_lits([c.weight / total for c in self.categories]), cat + 1)
        if abs(s - 1.0) < 1e-9:
            mass = (F.log(rank + 2) - F.log(rank + 1)) / F.log(n + 1)
        else:
            e = F.lit(1 - s)
            mass = (F.pow(rank + 2, e) - F.pow(rank + 1, e)) / (F.pow(n + 1, e) - 1)
        return weight * mass


def item_catalog(ids: DataFrame, *, seed: int, layout: CatalogLayout, promo_share: float) -> DataFrame:
    """Catalog rows (schema ``ITEMS``) from ``spark.range(n_items)``; product index = ``id``."""
    require_columns(ids, ["id"], "item_catalog")
    i = F.col("id")
    cat = layout.category_of(i)
    brands = F.element_at(F.array(*[_lits(list(c.brands)) for c in layout.categories]), cat + 1)
    nouns = F.element_at(F.array(*[_lits(list(c.nouns)) for c in layout.categories]), cat + 1)
    brand = F.element_at(brands, (F.floor(F.size(brands) * F.pow(uniform(seed, 11, i), 2)) + 1).cast("int"))
    noun = F.element_at(nouns, (F.floor(F.size(nouns) * uniform(seed, 12, i)) + 1).cast("int"))
    adjective = F.element_at(
        _lits(list(ADJECTIVES)), (F.floor(uniform(seed, 13, i) * len(ADJECTIVES)) + 1).cast("int")
    )
    model = F.concat(
        F.lit("X"), (F.lit(100) + F.floor(uniform(seed, 14, i) * 900)).cast("int").cast("string")
    )
    median = F.element_at(_lits([float(c.median_price) for c in layout.categories]), cat + 1)
    promotes = uniform(seed, 15, i) < promo_share
    period = (F.lit(14) + F.floor(uniform(seed, 16, i) * 22)).cast("int")
    return ids.select(
        (F.lit(PRODUCT_ID_BASE) + i).alias("product_id"),
        F.element_at(_lits([category_id(c.code) for c in layout.categories]), cat + 1).alias("category_id"),
        F.element_at(layout.codes, cat + 1).alias("category_code"),
        brand.alias("brand"),
        F.concat_ws(" ", adjective, F.initcap(brand), noun, model).alias("title"),
        F.greatest(F.lit(0.99), F.round(median * F.exp(0.5 * normal(seed, 17, i)), 2)).alias("base_price"),
        layout.item_popularity(cat, i).alias("popularity"),
        period.alias("promo_period_days"),
        F.when(promotes, 2 + F.floor(uniform(seed, 18, i) * 6))
        .otherwise(0)
        .cast("int")
        .alias("promo_length_days"),
        F.floor(uniform(seed, 19, i) * period).cast("int").alias("promo_offset_days"),
        F.when(promotes, F.round(0.10 + 0.30 * uniform(seed, 20, i), 2)).otherwise(0.0).alias("promo_depth"),
        (uniform(seed, 21, i) >= 0.08).alias("category_code_logged"),
        (uniform(seed, 22, i) >= 0.04).alias("brand_logged"),
    )


def on_promo(day: Column) -> Column:
    """Whether the item (columns of ``ITEMS``) is on promotion on ``day`` (days since the shop's start)."""
    phase = F.pmod(day + F.col("promo_offset_days"), F.col("promo_period_days"))
    return phase < F.col("promo_length_days")


def price_on_day(seed: int, day: Column) -> Column:
    """Shelf price of the item on ``day``: base x (1 - depth while on promotion) x daily +-3% jitter."""
    discount = F.when(on_promo(day), F.col("promo_depth")).otherwise(F.lit(0.0))
    jitter = 1 + PRICE_JITTER * (2 * uniform(seed, 23, F.col("product_id"), day) - 1)
    return F.greatest(F.lit(0.01), F.round(F.col("base_price") * (1 - discount) * jitter, 2))
