"""A handler for custom keys ``bench:<n>``: accepts every output, writes no artifact.

Why it ships with the engine: load tests, benchmarks and the chaos suite push 10^4-10^6
requests through real worker processes, which only know handlers registered at start-up.
Outputs still land on the attempt rows, so "exactly one result per key" stays checkable. A
key whose output contains ``BENCH_REJECT`` is rejected as a parse failure, which lets tests
drive the retry path with a simulator responder that emits it.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestration.transport.registry import AppliedResult, ExhaustedKey, Rejection

REJECT_MARKER = "BENCH_REJECT"


class BenchHandler:
    def apply(self, results: Sequence[AppliedResult]) -> dict[int, Rejection]:
        return {
            r.request_id: Rejection("parse", "output contained BENCH_REJECT")
            for r in results
            if REJECT_MARKER in r.output_text
        }

    def exhausted(self, keys: Sequence[ExhaustedKey]) -> None:
        """Nothing to record: the failed attempt rows are the record."""
