"""Customer lifetime value: BG/NBD and Gamma-Gamma (docs/VALUE.md)."""
