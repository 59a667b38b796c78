"""judge-gym Django project: settings, Celery app, urls."""

from judge_project.celery import app as celery_app

__all__ = ["celery_app"]
