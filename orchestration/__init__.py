"""Runs, stages, LLM transport (requests, batches, providers, simulator, tick) and judging."""
