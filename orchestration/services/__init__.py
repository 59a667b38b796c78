"""Judging services (writes): starting runs, advancing stages, control, result handlers."""
