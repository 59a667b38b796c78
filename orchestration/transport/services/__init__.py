"""Transport services: enqueue, routing, batches, direct calls, apply, the tick."""
