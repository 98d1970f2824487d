"""Vocabularies of the simulated shop and the deterministic catalogue generator.

The simulator (`irp.data.simulate`) draws everything it says and retrieves from the word lists in this
module, so they are the single place to change how the simulated world looks. Two kinds live here:

- the *catalogue* vocabulary: 28 categories from strongly visual (wall art, jewelry, apparel) to
  non-visual (batteries, printer ink), each with product types, brands, colors, styles, materials, a
  price level and "uses" tags (rooms, occasions, recipients) that only the search index sees;
- the *speech* vocabulary: intent templates, vague needs ("a gift for my sister"), fillers and ASR
  confusions, used to turn a latent shopping goal into a voice-style transcript.

`visual` is a category's *visual affinity*: how likely a shopper after that kind of product wants to see
it. It is the main cause of the latent visual intent and is never written into a record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Category:
    """One product category of the simulated shop."""

    name: str
    visual: float  # visual affinity in [0, 1]: P(wants to see) before the other causes
    types: tuple[str, ...]  # product types, spoken as they are written ("maxi dress")
    brands: tuple[str, ...]
    colors: tuple[str, ...]
    styles: tuple[str, ...]  # looks and patterns for visual categories, variants for the others
    materials: tuple[str, ...]
    price: float  # median price in dollars; prices are log-normal around it
    uses: tuple[str, ...]  # words only the search index sees (rooms, occasions, recipients)
    extras: tuple[str, ...] = ()  # title suffixes: sizes, pack counts
    audiences: tuple[str, ...] = ()  # "women's", "men's", "kids'" for wearables
    n_products: int = 160


_FASHION_COLORS = (
    "black", "white", "red", "navy", "blue", "green", "olive", "pink", "blush", "beige", "brown",
    "gray", "yellow", "burgundy", "teal", "lavender", "cream", "orange",
)
_HOME_COLORS = (
    "white", "gray", "beige", "navy", "green", "sage", "blue", "black", "brown", "walnut", "oak",
    "cream", "terracotta", "mustard", "blush", "teal", "charcoal", "ivory",
)
_METAL_COLORS = ("gold", "silver", "rose gold", "black", "white", "two tone")
_FASHION_STYLES = (
    "floral", "striped", "plaid", "polka dot", "boho", "vintage", "casual", "elegant", "minimalist",
    "preppy", "leopard print", "embroidered", "ruffled", "classic",
)
_HOME_STYLES = (
    "mid century modern", "farmhouse", "boho", "industrial", "scandinavian", "coastal", "rustic",
    "modern", "traditional", "geometric", "minimalist", "vintage", "art deco",
)
_WEAR = ("women's", "men's", "kids'")
_GIFT = ("gift", "birthday", "anniversary", "christmas", "her", "him")

CATEGORIES: tuple[Category, ...] = (
    # ---- strongly visual ---------------------------------------------------------------------
    Category(
        "wall art", 0.95,
        ("canvas print", "framed print", "poster", "wall tapestry", "metal wall art", "wall decal",
         "gallery wall set", "botanical print"),
        ("canvasly", "artloft", "frame and fable", "gallery row", "muralist"),
        _HOME_COLORS, _HOME_STYLES + ("abstract", "landscape", "botanical", "watercolor"),
        ("canvas", "paper", "metal", "wood", "fabric"),
        45.0, ("living room", "bedroom", "nursery", "office", "wall", "decor", "housewarming"),
        ("16x20", "24x36", "set of 3", "11x14"), n_products=220,
    ),
    Category(
        "jewelry", 0.92,
        ("necklace", "earrings", "hoop earrings", "bracelet", "ring", "pendant", "anklet",
         "charm bracelet", "stud earrings"),
        ("aurelia", "lumen and stone", "goldleaf", "silverline", "petite maison", "oro"),
        _METAL_COLORS, ("minimalist", "vintage", "boho", "classic", "statement", "dainty", "layered", "art deco"),
        ("sterling silver", "gold plated", "14k gold", "pearl", "crystal", "stainless steel"),
        60.0, _GIFT + ("wedding", "women", "jewellery"), (), ("women's", "men's"), n_products=220,
    ),
    Category(
        "apparel", 0.90,
        ("dress", "maxi dress", "sundress", "blouse", "t shirt", "sweater", "cardigan", "jeans",
         "skirt", "jacket", "coat", "hoodie", "jumpsuit", "blazer", "leggings", "pajamas"),
        ("northpeak", "lunaria", "harbor lane", "velvet fox", "oakridge", "mira and co", "urban thread"),
        _FASHION_COLORS, _FASHION_STYLES, ("cotton", "linen", "denim", "silk", "wool", "chiffon", "fleece"),
        40.0, ("clothes", "clothing", "outfit", "wear", "wedding", "party", "summer", "winter"),
        ("size small", "size medium", "size large", "plus size"), _WEAR, n_products=320,
    ),
    Category(
        "furniture", 0.88,
        ("sofa", "sectional", "armchair", "accent chair", "coffee table", "dining table", "bookshelf",
         "dresser", "nightstand", "desk", "office chair", "bar stool", "tv stand", "bed frame"),
        ("homestead", "nordhaus", "oak and iron", "loft living", "casa verde", "everyday basics"),
        _HOME_COLORS, _HOME_STYLES, ("solid wood", "velvet", "leather", "metal", "rattan", "linen"),
        250.0, ("living room", "bedroom", "office", "dining room", "furniture", "apartment", "home"),
        ("assembly required", "set of 2", "large", "small"), n_products=260,
    ),
    Category(
        "home decor", 0.86,
        ("throw pillow", "vase", "candle holder", "wall mirror", "planter", "picture frame",
         "decorative tray", "faux plant", "table runner", "curtains"),
        ("homestead", "casa verde", "hearth and fern", "nest and co", "willow lane"),
        _HOME_COLORS, _HOME_STYLES, ("ceramic", "glass", "cotton", "linen", "rattan", "brass"),
        30.0, ("living room", "bedroom", "decor", "housewarming", "home", "mantel", "shelf"),
        ("set of 2", "18x18", "large", "small"), n_products=240,
    ),
    Category(
        "rugs", 0.86,
        ("area rug", "runner rug", "round rug", "doormat", "bath mat", "outdoor rug"),
        ("loomcraft", "nordhaus", "kasbah", "hearth and fern"),
        _HOME_COLORS, _HOME_STYLES + ("persian", "shag"), ("wool", "jute", "polypropylene", "cotton"),
        120.0, ("living room", "bedroom", "hallway", "entryway", "floor", "home"),
        ("5x7", "8x10", "2x8", "4x6"), n_products=180,
    ),
    Category(
        "handbags", 0.85,
        ("tote bag", "crossbody bag", "backpack", "clutch", "wallet", "shoulder bag", "weekender bag"),
        ("velvet fox", "carryall", "mira and co", "satchel and sons", "lunaria"),
        _FASHION_COLORS, ("classic", "minimalist", "boho", "vintage", "quilted", "woven", "studded"),
        ("leather", "vegan leather", "canvas", "suede", "nylon"),
        70.0, _GIFT + ("travel", "work", "women", "purse"), (), ("women's", "men's"), n_products=180,
    ),
    Category(
        "shoes", 0.84,
        ("sneakers", "running shoes", "ankle boots", "heels", "sandals", "loafers", "ballet flats",
         "slippers", "hiking boots", "rain boots"),
        ("stridewell", "northpeak", "fleetfoot", "cobble and co", "urban thread"),
        _FASHION_COLORS, ("classic", "casual", "minimalist", "chunky", "retro", "platform", "slip on"),
        ("leather", "suede", "canvas", "mesh", "rubber"),
        75.0, ("shoe", "footwear", "running", "walking", "party", "wedding"),
        ("size 7", "size 8", "size 9", "size 10", "wide"), _WEAR, n_products=240,
    ),
    Category(
        "bedding", 0.76,
        ("comforter set", "duvet cover", "sheet set", "quilt", "pillowcases", "throw blanket",
         "weighted blanket", "bedspread"),
        ("dreamweave", "hearth and fern", "nest and co", "everyday basics", "cloudrest"),
        _HOME_COLORS, _HOME_STYLES + ("floral", "striped", "solid"),
        ("cotton", "linen", "microfiber", "bamboo", "flannel"),
        60.0, ("bedroom", "bed", "nursery", "guest room", "sleep"),
        ("queen", "king", "twin", "full"), n_products=200,
    ),
    Category(
        "eyewear", 0.74,
        ("sunglasses", "aviator sunglasses", "reading glasses", "blue light glasses", "sport sunglasses"),
        ("clearview", "sunward", "optica", "northpeak"),
        ("black", "tortoise", "gold", "silver", "clear", "brown", "pink", "blue"),
        ("aviator", "cat eye", "round", "oversized", "square", "classic", "retro"),
        ("acetate", "metal", "polycarbonate"),
        45.0, ("beach", "summer", "sun", "driving", "reading"), ("polarized", "2 pack"), ("women's", "men's"),
        n_products=140,
    ),
    Category(
        "watches", 0.72,
        ("watch", "smartwatch", "watch band", "chronograph watch", "dress watch"),
        ("tempo", "chronoline", "meridian", "oakridge"),
        _METAL_COLORS + ("brown", "blue", "green"), ("classic", "minimalist", "sport", "luxury", "vintage"),
        ("stainless steel", "leather", "silicone", "titanium"),
        120.0, _GIFT + ("men", "women"), ("40mm", "44mm"), ("women's", "men's"), n_products=140,
    ),
    Category(
        "lighting", 0.66,
        ("table lamp", "floor lamp", "pendant light", "chandelier", "string lights", "desk lamp",
         "wall sconce", "night light"),
        ("lumina", "brightside", "loft living", "casa verde", "everyday basics"),
        ("black", "white", "brass", "gold", "gray", "wood", "bronze", "clear"),
        _HOME_STYLES, ("metal", "glass", "ceramic", "rattan", "wood"),
        65.0, ("living room", "bedroom", "office", "light", "lamp", "patio"),
        ("led", "dimmable", "set of 2"), n_products=160,
    ),
    Category(
        "toys", 0.60,
        ("building set", "doll", "plush toy", "jigsaw puzzle", "board game", "action figure", "toy car",
         "play kitchen", "stuffed animal", "train set"),
        ("playwell", "brickworks", "tiny town", "funfactory", "cuddle co"),
        ("multicolor", "pink", "blue", "red", "green", "yellow", "purple", "rainbow"),
        ("educational", "classic", "wooden", "interactive", "collectible", "dinosaur", "unicorn"),
        ("plastic", "wood", "plush", "cardboard"),
        30.0, ("kids", "children", "birthday", "christmas", "gift", "nursery", "toddler"),
        ("ages 3 and up", "ages 8 and up", "ages 5 and up"), n_products=200,
    ),
    Category(
        "beauty", 0.55,
        ("lipstick", "nail polish", "eyeshadow palette", "perfume", "blush", "foundation", "mascara"),
        ("glowlab", "petal and pout", "lumiere", "bare canvas"),
        ("nude", "red", "pink", "coral", "berry", "plum", "neutral", "rose"),
        ("matte", "glossy", "shimmer", "natural", "long lasting"),
        ("cream", "powder", "liquid", "gel"),
        22.0, _GIFT + ("makeup", "cosmetics", "women"), ("0.5 oz", "set of 3"), n_products=150,
    ),
    # ---- in between -----------------------------------------------------------------------------
    Category(
        "kitchenware", 0.42,
        ("dinnerware set", "coffee mug", "cookware set", "mixing bowls", "cutting board", "knife set",
         "water bottle", "cast iron skillet", "food storage containers", "drinking glasses"),
        ("chefline", "hearth and fern", "everyday basics", "copper and co"),
        ("white", "black", "gray", "blue", "green", "red", "stainless", "copper"),
        ("modern", "farmhouse", "classic", "nonstick", "stackable"),
        ("ceramic", "stainless steel", "glass", "bamboo", "cast iron"),
        35.0, ("kitchen", "cooking", "housewarming", "wedding registry", "dining"),
        ("set of 4", "16 piece", "12 inch"), n_products=180,
    ),
    Category(
        "electronics", 0.40,
        ("wireless earbuds", "headphones", "bluetooth speaker", "smart speaker", "fitness tracker",
         "tablet case", "phone case", "webcam", "laptop bag"),
        ("soundcore one", "auralux", "voltix", "everyday basics", "pixelpeak"),
        ("black", "white", "blue", "gray", "rose gold", "green", "clear"),
        ("noise cancelling", "waterproof", "sport", "compact", "premium"),
        ("plastic", "aluminum", "silicone"),
        60.0, ("tech", "music", "gift", "work", "office", "gadget"), ("2nd gen", "pro"), n_products=180,
    ),
    Category(
        "sports", 0.36,
        ("yoga mat", "dumbbells", "resistance bands", "tent", "sleeping bag", "jump rope", "foam roller",
         "camping chair", "gym bag"),
        ("trailhead", "fitcore", "northpeak", "summit gear"),
        ("black", "blue", "green", "purple", "gray", "orange", "red"),
        ("non slip", "adjustable", "lightweight", "heavy duty", "compact"),
        ("rubber", "foam", "nylon", "steel", "polyester"),
        35.0, ("camping", "workout", "gym", "fitness", "outdoor", "hiking"), ("set of 2", "large", "small"),
        n_products=150,
    ),
    Category(
        "pet supplies", 0.28,
        ("dog bed", "dog food", "cat litter", "chew toy", "dog collar", "cat tree", "dog treats",
         "fish food"),
        ("pawsome", "happy tails", "whisker and co", "everyday basics"),
        ("brown", "gray", "black", "blue", "red", "beige"),
        ("orthopedic", "grain free", "natural", "durable", "clumping"),
        ("plush", "nylon", "chicken", "salmon", "clay"),
        25.0, ("dog", "cat", "puppy", "kitten", "pet"), ("large", "small", "medium"), n_products=140,
    ),
    # ---- non-visual consumables and utilities -------------------------------------------------
    Category(
        "personal care", 0.16,
        ("shampoo", "conditioner", "toothpaste", "body wash", "deodorant", "razor blades", "lotion"),
        ("pure and co", "freshlane", "everyday basics", "clearwave"),
        ("white", "blue", "green", "clear"),
        ("unscented", "sensitive", "original", "value pack", "travel size"),
        ("gel", "cream", "liquid", "stick"),
        9.0, ("bathroom", "shower", "hygiene", "travel"), ("2 pack", "16 oz", "3 count"), n_products=120,
    ),
    Category(
        "gift cards", 0.14,
        ("gift card", "e gift card", "gift card in a greeting card", "gift card tin"),
        ("shopwide", "everyday basics", "giftly"),
        ("multicolor", "red", "gold", "blue"),
        ("birthday", "thank you", "holiday", "congratulations", "classic"),
        ("plastic", "digital", "paper"),
        50.0, _GIFT + ("present", "graduation", "last minute"), ("25 dollars", "50 dollars", "100 dollars"),
        n_products=90,
    ),
    Category(
        "chargers", 0.12,
        ("phone charger", "usb c cable", "wall charger", "power bank", "charging cable", "wireless charger",
         "car charger"),
        ("voltix", "chargeit", "everyday basics", "ampere"),
        ("black", "white", "gray", "blue"),
        ("fast charging", "braided", "compact", "dual port", "magnetic"),
        ("plastic", "nylon", "aluminum"),
        18.0, ("phone", "travel", "car", "office", "tech"), ("6 ft", "10 ft", "2 pack", "20w"), n_products=140,
    ),
    Category(
        "coffee", 0.10,
        ("ground coffee", "coffee pods", "whole bean coffee", "green tea", "k cups", "cold brew",
         "chai tea"),
        ("morning ritual", "roastery row", "bean and leaf", "everyday basics"),
        ("brown", "black", "green"),
        ("dark roast", "medium roast", "decaf", "organic", "original"),
        ("arabica", "robusta", "tea leaves"),
        14.0, ("kitchen", "breakfast", "morning", "office"), ("12 oz", "24 count", "2 lb", "100 bags"),
        n_products=120,
    ),
    Category(
        "groceries", 0.08,
        ("peanut butter", "pasta", "cereal", "olive oil", "granola bars", "sparkling water", "rice",
         "almond milk", "trail mix", "chips"),
        ("green pantry", "harvest farms", "everyday basics", "sunny acres"),
        ("assorted",), ("organic", "gluten free", "family size", "original", "low sodium"),
        ("food",),
        6.0, ("kitchen", "snack", "pantry", "breakfast", "party", "camping"), ("12 pack", "16 oz", "32 oz"),
        n_products=150,
    ),
    Category(
        "detergent", 0.05,
        ("laundry detergent", "detergent pods", "dish soap", "dishwasher pods", "fabric softener",
         "stain remover", "all purpose cleaner"),
        ("sparkle", "freshlane", "everyday basics", "clearwave"),
        ("blue", "green", "clear", "white"),
        ("free and clear", "lavender scent", "original", "he", "concentrated"),
        ("liquid", "powder", "pods"),
        13.0, ("laundry", "kitchen", "cleaning", "household", "dishes"), ("64 loads", "42 count", "50 oz"),
        n_products=120,
    ),
    Category(
        "vitamins", 0.05,
        ("multivitamin", "vitamin d", "vitamin c", "fish oil", "probiotic", "melatonin", "protein powder",
         "magnesium"),
        ("vitalife", "pure and co", "everyday basics", "natures way home"),
        ("white", "orange", "amber"), ("gummies", "capsules", "tablets", "softgels", "vegan"),
        ("supplement",),
        16.0, ("health", "healthy", "immune", "sleep", "wellness", "daily"), ("60 count", "120 count", "90 day supply"),
        n_products=120,
    ),
    Category(
        "paper goods", 0.04,
        ("paper towels", "toilet paper", "facial tissues", "napkins", "paper plates"),
        ("softfold", "everyday basics", "cloudrest", "sparkle"),
        ("white",), ("select a size", "ultra soft", "recycled", "double roll", "mega roll"),
        ("paper",),
        18.0, ("kitchen", "bathroom", "household", "party", "cleaning"), ("6 rolls", "12 rolls", "24 pack"),
        n_products=100,
    ),
    Category(
        "batteries", 0.04,
        ("aa batteries", "aaa batteries", "9 volt batteries", "rechargeable batteries",
         "coin cell batteries", "c batteries", "d batteries"),
        ("voltix", "ampere", "everyday basics", "longcell"),
        ("black", "silver", "copper"),
        ("alkaline", "lithium", "rechargeable", "long lasting", "value pack"),
        ("alkaline", "lithium", "nimh"),
        12.0, ("remote", "household", "toys", "flashlight"), ("4 pack", "8 pack", "24 pack", "48 count"),
        n_products=100,
    ),
    Category(
        "printer ink", 0.04,
        ("ink cartridge", "toner cartridge", "black ink", "color ink combo pack", "printer paper"),
        ("inkwell", "printpro", "everyday basics"),
        ("black", "tri color", "cyan", "magenta", "yellow"),
        ("high yield", "standard yield", "remanufactured", "original", "xl"),
        ("ink", "toner", "paper"),
        30.0, ("printer", "office", "school", "home office"), ("2 pack", "3 pack", "value pack"),
        n_products=100,
    ),
)

CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)

# Fields every catalogue product carries (`price` is a float, the rest strings).
PRODUCT_FIELDS = ("title", "brand", "color", "style", "category", "material", "price")


_SMALL_WORDS = frozenset({"and", "by", "in", "of", "for", "with"})


def _titlecase(text: str) -> str:
    """Catalogue capitalization: "oak and iron" -> "Oak and Iron", "women's" -> "Women's".

    >>> _titlecase("frame and fable women's 16x20")
    "Frame and Fable Women's 16x20"
    """
    words = text.split()
    return " ".join(w if (i and w in _SMALL_WORDS) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _title(cat: Category, rng: np.random.Generator, brand: str, color: str, style: str, material: str,
           ptype: str, audience: str, extra: str) -> str:
    """A catalogue-style title: capitalized words, attributes in one of a few common layouts."""
    t = _titlecase
    layout = rng.integers(3)
    aud = f"{t(audience)} " if audience else ""
    tail = f", {t(extra)}" if extra else ""
    if cat.visual < 0.3:  # consumables: brand, type and variant; color rarely matters
        name = f"{t(brand)} {t(ptype)}, {t(style)}{tail}"
        return name if layout else f"{t(brand)} {t(style)} {t(ptype)}{tail}"
    if layout == 0:
        return f"{t(brand)} {aud}{t(style)} {t(material)} {t(ptype)} - {t(color)}{tail}"
    if layout == 1:
        return f"{t(brand)} {aud}{t(color)} {t(style)} {t(ptype)}, {t(material)}{tail}"
    return f"{aud}{t(style)} {t(ptype)} in {t(color)} by {t(brand)}{tail}"


def build_catalog(seed: int = 0) -> list[dict[str, object]]:
    """The simulated shop's catalogue: a deterministic list of product dicts for a seed.

    Products are grouped by category (in `CATEGORY_NAMES` order) and, within a category, ordered by
    popularity: index 0 is the best seller. Every product has the keys of `PRODUCT_FIELDS`; a
    non-visual product's color may be absent from its title but is still set.

    >>> cat = build_catalog(0)
    >>> len(cat) > 4000, len({p["category"] for p in cat})
    (True, 28)
    >>> sorted(cat[0]) == sorted(PRODUCT_FIELDS), cat == build_catalog(0), cat == build_catalog(1)
    (True, True, False)
    """
    rng = np.random.default_rng([seed, 1729])
    products: list[dict[str, object]] = []
    for cat in CATEGORIES:
        seen: set[str] = set()
        n = 0
        while n < cat.n_products:
            ptype = cat.types[rng.integers(len(cat.types))]
            brand = cat.brands[rng.integers(len(cat.brands))]
            color = cat.colors[rng.integers(len(cat.colors))]
            style = cat.styles[rng.integers(len(cat.styles))]
            material = cat.materials[rng.integers(len(cat.materials))]
            audience = cat.audiences[rng.integers(len(cat.audiences))] if cat.audiences else ""
            extra = cat.extras[rng.integers(len(cat.extras))] if cat.extras and rng.random() < 0.6 else ""
            title = " ".join(_title(cat, rng, brand, color, style, material, ptype, audience, extra).split())
            if title in seen:  # a shop lists each title once
                continue
            seen.add(title)
            n += 1
            price = float(cat.price * np.exp(rng.normal(0.0, 0.45)))
            price = round(price) - 0.01 if price > 5 else round(price, 2)
            products.append({
                "title": title, "brand": brand, "color": color, "style": style, "category": cat.name,
                "material": material, "price": price,
            })
    return products


def index_text(product: dict[str, object]) -> str:
    """The text the search index sees for a product: its fields plus its category's "uses" tags.

    >>> index_text({"title": "Voltix AA Batteries", "brand": "voltix", "category": "batteries"})[:40]
    'Voltix AA Batteries voltix batteries rem'
    """
    cat = _BY_NAME.get(str(product.get("category", "")))
    fields = [str(product[k]) for k in ("title", "brand", "color", "style", "material", "category") if k in product]
    return " ".join(fields + list(cat.uses if cat else ()))


_BY_NAME = {c.name: c for c in CATEGORIES}


def category(name: str) -> Category:
    """The `Category` called `name` (KeyError when there is none)."""
    return _BY_NAME[name]


# =============================================================================================
# Speech vocabulary: how shoppers say things to a voice assistant (lowercase, no punctuation).
# =============================================================================================

# Vague needs that name no category: (phrase, {category: weight}). The phrase may hold a {slot}
# filled from NEED_SLOTS; the weights say which categories such a shopper is really after.
_KIDS, _WOMEN, _MEN = ("kid",), ("woman",), ("man",)
RECIPIENTS = {
    "woman": ("sister", "mom", "wife", "girlfriend", "grandma", "best friend", "aunt", "daughter in law"),
    "man": ("dad", "husband", "brother", "boyfriend", "grandpa", "boss", "uncle", "son in law"),
    "kid": ("niece", "nephew", "son", "daughter", "grandson", "granddaughter", "godson"),
}
NEEDS: tuple[tuple[str, str, dict[str, float]], ...] = (
    # (group, phrase, category weights); group says which slot vocabulary fills {who}/{room}/...
    ("woman", "a gift for my {who}", {"jewelry": 4, "handbags": 2, "beauty": 2, "apparel": 1.5, "home decor": 1,
                                      "gift cards": 2.5, "coffee": 1, "watches": 1, "wall art": 0.5}),
    ("man", "a gift for my {who}", {"watches": 2.5, "electronics": 2.5, "gift cards": 3, "coffee": 1.5,
                                    "apparel": 1, "eyewear": 1, "sports": 1.5, "handbags": 0.5}),
    ("kid", "a present for my {who}", {"toys": 5, "apparel": 1, "gift cards": 1.5, "electronics": 1,
                                       "bedding": 0.5, "sports": 0.5}),
    ("kid", "something for my {who}s birthday", {"toys": 5, "gift cards": 2, "apparel": 1, "electronics": 1}),
    ("room", "something for the {room}", {}),
    ("room", "stuff to redo my {room}", {}),
    ("room", "something to brighten up the {room}", {"lighting": 3, "wall art": 3, "home decor": 2, "rugs": 1}),
    ("occasion", "something for a {occasion}", {}),
    ("occasion", "what i need for {occasion}", {}),
    ("pet", "something for my {pet}", {"pet supplies": 6, "toys": 0.3}),
    ("chore", "something to {chore}", {}),
    ("self", "something comfy to wear", {"apparel": 4, "shoes": 2}),
    ("self", "something to stay healthy", {"vitamins": 4, "groceries": 1.5, "sports": 2, "coffee": 0.5}),
    ("self", "something for my dying phone", {"chargers": 6, "electronics": 1}),
    ("self", "office supplies", {"printer ink": 4, "chargers": 2, "furniture": 1, "lighting": 1,
                                 "electronics": 1, "coffee": 1}),
    ("self", "stuff for the new apartment", {"furniture": 2, "home decor": 2, "kitchenware": 2, "rugs": 1,
                                             "bedding": 1, "paper goods": 1, "detergent": 1, "lighting": 1}),
    ("self", "household essentials", {"paper goods": 3, "detergent": 3, "batteries": 2, "personal care": 2,
                                      "groceries": 1}),
)
ROOMS: dict[str, dict[str, float]] = {
    "living room": {"furniture": 3, "home decor": 3, "rugs": 2, "wall art": 2, "lighting": 2},
    "bedroom": {"bedding": 3, "furniture": 2, "wall art": 1.5, "lighting": 1.5, "rugs": 1, "home decor": 1},
    "kitchen": {"kitchenware": 4, "paper goods": 2, "detergent": 2, "coffee": 1.5, "groceries": 1.5,
                "home decor": 0.5},
    "bathroom": {"paper goods": 3, "personal care": 3, "rugs": 1, "home decor": 1, "detergent": 1},
    "home office": {"furniture": 2, "printer ink": 2, "lighting": 1.5, "chargers": 1.5, "electronics": 1,
                    "wall art": 1},
    "nursery": {"bedding": 2, "toys": 2, "wall art": 2, "furniture": 1, "paper goods": 1, "rugs": 1},
    "dining room": {"furniture": 3, "kitchenware": 2, "lighting": 1.5, "home decor": 1.5, "rugs": 1},
    "patio": {"lighting": 2, "furniture": 2, "rugs": 1, "home decor": 1, "sports": 1},
}
OCCASIONS: dict[str, dict[str, float]] = {
    "wedding": {"apparel": 3, "jewelry": 2, "shoes": 2, "gift cards": 1.5, "kitchenware": 1, "handbags": 1},
    "birthday party": {"toys": 2, "groceries": 2, "paper goods": 1.5, "home decor": 1, "gift cards": 1.5,
                       "apparel": 0.5},
    "camping trip": {"sports": 4, "batteries": 2, "groceries": 1.5, "chargers": 1, "eyewear": 0.5},
    "the beach": {"apparel": 2, "eyewear": 2, "handbags": 1, "shoes": 1, "personal care": 1, "sports": 0.5},
    "back to school": {"apparel": 2, "handbags": 1.5, "printer ink": 2, "chargers": 1.5, "electronics": 1,
                       "shoes": 1},
    "game night": {"toys": 3, "groceries": 2, "coffee": 0.5, "paper goods": 1},
    "date night": {"apparel": 3, "shoes": 1.5, "jewelry": 1.5, "beauty": 1.5, "handbags": 1},
    "the holidays": {"home decor": 2, "toys": 2, "gift cards": 2, "lighting": 1, "apparel": 1, "jewelry": 1},
    "a road trip": {"chargers": 2, "groceries": 2, "electronics": 1, "eyewear": 1, "batteries": 1},
}
CHORES: dict[str, dict[str, float]] = {
    "clean the kitchen": {"detergent": 4, "paper goods": 3},
    "do the laundry": {"detergent": 6},
    "fix my printer": {"printer ink": 6},
    "power the remote": {"batteries": 6},
    "keep the kids busy": {"toys": 5, "electronics": 1},
    "help me sleep better": {"bedding": 2, "vitamins": 2, "lighting": 1},
    "make coffee at work": {"coffee": 4, "kitchenware": 2},
}
PETS = ("dog", "cat", "puppy", "kitten")


# Templates per intent; {np} is the noun phrase of what is wanted. Visual cue words (show, see, look)
# come with the intent: browsing shoppers ask to *see*.
NP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "search": ("find {np}", "find me {np}", "search for {np}", "i am looking for {np}", "look for {np}",
               "{np}", "do you have {np}", "i need {np}", "can you find {np}"),
    "buy": ("buy {np}", "order {np}", "i want to buy {np}", "get me {np}", "purchase {np}",
            "can you order {np}", "i want to order {np}"),
    "reorder": ("reorder {np}", "order {np} again", "buy {np} again", "i need more {np}", "i ran out of {np}",
                "get {np} again"),
    "add_to_cart": ("add {np} to my cart", "put {np} in my cart", "add {np} to my shopping list",
                    "add {np} to the cart"),
    "price_check": ("how much is {np}", "how much are {np}", "whats the price of {np}", "how much does {np} cost",
                    "check the price of {np}", "what does {np} cost"),
    "product_question": ("does {np} come in {color}", "what material is {np}", "is {np} machine washable",
                         "what does {np} look like", "how big is {np}", "are the reviews good for {np}",
                         "what colors does {np} come in", "how long does {np} last", "is {np} in stock"),
    "deals": ("any deals on {np}", "whats on sale in {np}", "are there discounts on {np}", "find deals on {np}",
              "is {np} on sale", "show me deals on {np}"),
    "browse": ("show me {np}", "let me see {np}", "i want to see {np}", "what {np} do you have", "browse {np}",
               "can i look at {np}", "show me some {np}", "what does {np} look like"),
}
# Follow-up turns refer back to what is on the table ("it", "that one").
FOLLOWUP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "search": ("do you have it in {color}", "find one in {color}", "what about in {color}", "anything {style}",
               "find something cheaper", "find something similar", "any other brands"),
    "buy": ("buy it", "i will take it", "order that one", "buy the first one", "get me the second one",
            "order it"),
    "reorder": ("order that again",),
    "add_to_cart": ("add it to my cart", "add that to my cart", "put the first one in my cart",
                    "add two of those", "save it to my cart"),
    "price_check": ("how much is it", "how much is that one", "whats the price", "is it expensive",
                    "how much is the first one", "what does it cost"),
    "product_question": ("what color is it", "what does it look like", "what is it made of",
                         "is it machine washable", "does it come in {color}", "how big is it",
                         "is it waterproof", "what are the reviews like", "how many come in a pack",
                         "when would it arrive"),
    "deals": ("is it on sale", "any cheaper options", "are there any deals on that"),
    "browse": ("show me more like that", "show me more", "show me other colors", "let me see the next one",
               "what else do you have", "show me that in {color}", "show me the {style} ones"),
}
BRAND_NPS = ("something from {brand}", "{brand} stuff", "{brand} products", "the new {brand} collection",
             "anything by {brand}")
HISTORY_NPS = ("my usual", "the usual", "what i bought last time", "my last order", "the same one as last time",
               "my regular {type}", "the {type} i got last time", "my usual {type}")
DETERMINERS = ("a", "some", "a", "the", "", "any")
PRICE_CAPS = ("under twenty dollars", "under fifty dollars", "under a hundred dollars", "on sale",
              "under two hundred dollars", "that is cheap")
FILLERS_BEFORE = ("alexa", "hey alexa", "um", "uh", "okay", "so", "alexa um", "can you", "please", "hmm",
                  "alexa can you", "okay so")
FILLERS_AFTER = ("please", "for me", "thanks", "right now", "again", "real quick")
FILLERS_INSIDE = ("um", "uh", "like", "you know")

# Words whose presence in a query is itself a visual cue (beyond colors and styles).
VISUAL_CUE_WORDS = frozenset({"show", "see", "look", "colors", "color", "pretty", "cute", "style"})

# ASR: homophones and near-misses a recognizer produces for shopping words.
ASR_CONFUSIONS: dict[str, tuple[str, ...]] = {
    "red": ("read", "bread"), "blue": ("blew",), "pair": ("pear",), "for": ("four", "far"), "to": ("two", "too"),
    "two": ("to", "too"), "sweater": ("sweeter",), "jeans": ("genes", "jean"), "rug": ("rock", "rog"),
    "ring": ("bring", "wring"), "shoes": ("choose", "shoe"), "boots": ("boot", "boats"), "beige": ("bays", "beige"),
    "navy": ("maybe", "naive"), "teal": ("teel", "tell"), "gray": ("grey", "great"), "white": ("why", "wide"),
    "black": ("block", "back"), "green": ("greene", "queen"), "lamp": ("lump", "lamb"), "sofa": ("so far",),
    "earrings": ("ear rings", "hearings"), "necklace": ("neckless", "neck lace"), "bracelet": ("brace let",),
    "toner": ("tone her", "tuner"), "ink": ("inc", "think"), "towels": ("tails", "towel"), "pods": ("pads", "pots"),
    "batteries": ("battery", "bad trees"), "blush": ("flush", "brush"), "linen": ("linden", "lemon"),
    "floral": ("flora", "florals"), "vase": ("base", "face"), "dress": ("address", "dressed"),
    "coat": ("code", "goat"), "watch": ("wash", "what"), "bag": ("back", "bad"), "pillow": ("pillar", "willow"),
    "cart": ("card", "car"), "buy": ("by", "bye"), "show": ("so", "shore"), "some": ("sum",), "dollars": ("dollar",),
    "cream": ("clean", "green"), "rose": ("rows", "roads"), "wool": ("will", "well"), "silk": ("milk",),
    "alexa": ("alexis", "a lexa"), "reorder": ("we order", "record"), "much": ("march",),
}


def vague_needs() -> list[tuple[str, dict[str, float]]]:
    """Every vague phrase with its slot filled, and the categories a shopper saying it is after.

    >>> needs = dict(vague_needs())
    >>> needs["something for the living room"]["furniture"], "batteries" in needs["something for the living room"]
    (3, False)
    """
    slots: dict[str, dict[str, dict[str, float]]] = {
        "room": ROOMS, "occasion": OCCASIONS, "chore": CHORES,
        "pet": {p: {} for p in PETS},
        **{g: {who: {} for who in RECIPIENTS[g]} for g in RECIPIENTS},
    }
    out: list[tuple[str, dict[str, float]]] = []
    for group, phrase, weights in NEEDS:
        if group == "self":
            out.append((phrase, weights))
            continue
        for value, slot_weights in slots[group].items():
            text = phrase.format(who=value, room=value, occasion=value, chore=value, pet=value)
            out.append((text, weights or slot_weights))
    return out
