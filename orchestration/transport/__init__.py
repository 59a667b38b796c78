"""LLM transport: requests, batches, provider adapters, simulator, limiter use, the tick.

Knows nothing of judging or evidence: domain code registers result handlers by custom_key
prefix (ARCHITECTURE.md section 5).
"""
