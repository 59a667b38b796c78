from tests.pipeline.conftest import eager_celery, simulator  # noqa: F401 - shared fixtures
