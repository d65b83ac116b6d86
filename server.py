"""WSGI entry point: `gunicorn server:app` (what `qa serve` runs)."""
from qa.app import create_app

app = create_app()
