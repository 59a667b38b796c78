"""Scoped policies (rate limits, budgets, retries), the precedence resolver and the limiter."""
