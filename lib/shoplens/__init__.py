"""ShopLens: nightly PySpark batch jobs for e-commerce behaviour analytics."""

__version__ = "0.1.0"
