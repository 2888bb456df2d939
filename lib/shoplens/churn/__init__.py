"""Churn prediction from profile snapshots (docs/CHURN.md)."""
