"""The demo shop's vocabularies: category nouns, title words, brand syllables and review phrases.

Every string here ends up inside a JSON string written by hand (see :mod:`shoplens.demo.landing`),
so none may contain a quote, a backslash or a control character; :func:`_check_json_safe` enforces
it at import time.
"""

from __future__ import annotations

CATEGORY_NOUNS = (
    "Headphones", "Sneakers", "Backpack", "Blender", "Desk Lamp", "Water Bottle", "Yoga Mat",
    "Coffee Maker", "Phone Case", "Charger", "Jacket", "T-Shirt", "Jeans", "Watch", "Sunglasses",
    "Perfume", "Face Cream", "Shampoo", "Notebook", "Pen Set", "Board Game", "Puzzle", "Drone",
    "Camera", "Tripod", "Keyboard", "Mouse", "Monitor", "Router", "Speaker", "Kettle", "Toaster",
    "Frying Pan", "Knife Set", "Pillow", "Blanket", "Towel", "Plant Pot", "Dog Bed", "Cat Toy",
)

TITLE_ADJECTIVES = (
    "Classic", "Compact", "Pro", "Ultra", "Eco", "Smart", "Deluxe", "Essential", "Premium", "Lite",
    "Max", "Urban", "Vintage", "Sport", "Travel", "Mini", "Plus", "Air", "Studio", "Basic",
)

BRAND_SYLLABLES = (
    "nor", "vik", "ze", "lo", "ka", "ri", "mon", "ta", "bel", "sun",
    "ox", "fi", "ra", "do", "lu", "mi", "tek", "ar", "po", "qui",
)

# Review phrases: a review's phrases are drawn from the positive list with a probability that
# grows with its star rating (POSITIVE_PHRASE_PROBABILITY), otherwise from the negative list.
POSITIVE_PHRASES = (
    "great quality", "works perfectly", "excellent value", "love it", "very comfortable",
    "fast delivery", "highly recommend", "exactly as described", "beautiful design",
    "sturdy and well made", "would buy again", "perfect fit", "easy to use", "arrived quickly",
    "fantastic product", "happy with this purchase",
)
NEGATIVE_PHRASES = (
    "poor quality", "stopped working", "waste of money", "very disappointed", "broke after a week",
    "arrived damaged", "does not fit", "cheap materials", "not as described",
    "terrible customer service", "would not recommend", "had to send it back",
    "flimsy and uncomfortable", "smaller than expected", "late delivery", "missing parts",
)
# Index = star rating (0 unused).
POSITIVE_PHRASE_PROBABILITY = (0.0, 0.08, 0.25, 0.5, 0.8, 0.95)


def _words(phrases: tuple[str, ...]) -> set[str]:
    return {word for phrase in phrases for word in phrase.split()}


# Words that occur only on one side: what a test (or a sentiment model) can count.
POSITIVE_WORDS = frozenset(_words(POSITIVE_PHRASES) - _words(NEGATIVE_PHRASES))
NEGATIVE_WORDS = frozenset(_words(NEGATIVE_PHRASES) - _words(POSITIVE_PHRASES))


def _check_json_safe(*groups: tuple[str, ...]) -> None:
    for group in groups:
        for text in group:
            if any(ch in text for ch in '"\\') or any(ord(ch) < 0x20 for ch in text) or not text.isascii():
                raise ValueError(f"vocabulary entry {text!r} needs JSON escaping")


_check_json_safe(CATEGORY_NOUNS, TITLE_ADJECTIVES, BRAND_SYLLABLES, POSITIVE_PHRASES, NEGATIVE_PHRASES)
