"""Flask application factory: `create_app(config)` builds the app; tests create their own."""
from __future__ import annotations

from typing import Any, Mapping

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from qa.api import api, error_response, http_error_json
from qa.config import Settings
from qa.rebuild import RebuildRunner
from qa.service import QAService
from qa.web import web

MAX_BODY_BYTES = 16 * 1024


def create_app(config: Mapping[str, Any] | None = None, service: QAService | None = None) -> Flask:
    """Build the app. `config` overrides settings from the environment (keys of `Settings`)."""
    settings = Settings.from_env(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    service = service or QAService(settings)
    app.extensions["qa"] = service
    app.extensions["qa_settings"] = settings
    app.extensions["qa_rebuild"] = RebuildRunner(settings, service.embedder)
    app.register_blueprint(api)
    app.register_blueprint(web)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        if request.path.startswith("/api/") or request.path == "/api":
            return http_error_json(err)
        return err

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to answer; the error has been logged")

    return app
