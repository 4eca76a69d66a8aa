"""The web app's blueprints and error pages."""
from flask import Flask


def init_app(app: Flask) -> None:
    """Register every blueprint of the dashboard."""
    from . import health, home

    app.register_blueprint(home.bp)
    app.register_blueprint(health.bp)
