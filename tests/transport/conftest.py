from tests.live import live_procs  # noqa: F401 - shared fixture
from tests.pipeline.conftest import eager_celery, simulator  # noqa: F401 - shared fixtures
