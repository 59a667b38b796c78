"""Judging domain logic: prompts, label tokens, output parsers and the simulator's responder.

Everything here is pure (no Django models, no I/O) so the contracts between prompts, parsers
and the provider simulator can be tested without a database. Services in ``orchestration``
load rows, call these functions and persist the results.
"""
