from django.apps import AppConfig


class ConfigsAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "configs_app"
