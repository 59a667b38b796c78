"""The full fault matrix under pytest (``JUDGE_CHAOS=1``): every scenario once, full strength.

For repeated runs and the summary table use ``python -m tests.chaos.matrix --runs 10``.
"""

from __future__ import annotations

import pytest

from tests.chaos import scenarios
from tests.chaos.test_fast import check

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos]


@pytest.mark.parametrize("name", sorted(scenarios.SCENARIOS))
def test_fault(name, tmp_path, seed) -> None:
    check(scenarios.SCENARIOS[name](tmp_path, seed, quick=False))
