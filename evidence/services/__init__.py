"""Evidence services (writes)."""
