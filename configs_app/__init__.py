"""Durable experiment configs: versioned append-only templates and immutable run configs."""
