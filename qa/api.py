"""JSON HTTP API: ask, sources, health, OpenAPI. Every error is `{"error": {"code", "message"}}`."""
from __future__ import annotations

import hmac
import time
from dataclasses import replace

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from qa.embedding import ModelError
from qa.export import citations_csv
from qa.filters import FilterError, Scope, parse_scope, scope_from_query
from qa.indexing import BuildBusy, IndexBuilder, SourcesMismatch
from qa.openapi import openapi_document
from qa.recency import SORTS, Sort
from qa.service import QAService, ServiceUnavailable

MAX_QUESTION_CHARS = 1000
MAX_K = 50
DEFAULT_K = 5

api = Blueprint("api", __name__, url_prefix="/api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _service() -> QAService:
    return current_app.extensions["qa"]


def validate_question(value) -> str:
    if value is None:
        raise ApiError(400, "missing_question", "a question is required: JSON field 'question' or query parameter 'q'")
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"'question' must be a string, not {type(value).__name__}")
    question = value.strip()
    if not question:
        raise ApiError(400, "empty_question", "the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ApiError(400, "question_too_long", f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
    return question


def validate_k(value) -> int:
    if value is None:
        return DEFAULT_K
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_type", f"'k' must be a whole number from 1 to {MAX_K}, not {type(value).__name__}")
    if not 1 <= value <= MAX_K:
        raise ApiError(400, "k_out_of_range", f"'k' must be from 1 to {MAX_K}, not {value}")
    return value


FILTER_FIELDS = ("sources", "outlets", "published_after", "published_before")
FORMATS = ("json", "csv")


def validate_sort(value) -> Sort:
    if value is None:
        return "relevance"
    if value not in SORTS:
        raise ApiError(400, "invalid_sort", f"'sort' must be one of {', '.join(SORTS)}, not {str(value)[:20]!r}")
    return value


def _answer(question, k, scope: Scope, sort):
    return _service().answer(validate_question(question), validate_k(k), scope, validate_sort(sort))


@api.get("/ask")
def ask_get():
    unknown = set(request.args) - {"q", "k", "sort", "format", *FILTER_FIELDS}
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    k = request.args.get("k")
    if k is not None:
        if not (k.isascii() and k.isdigit()):  # str.isdigit alone accepts '²' and other digits int() refuses
            raise ApiError(400, "invalid_type", f"'k' must be a whole number from 1 to {MAX_K}, not {k[:20]!r}")
        digits = k.lstrip("0")
        k = int(digits or "0") if len(digits) <= 3 else MAX_K + 1  # a 5,000-digit k is out of range, not parsed
    output = request.args.get("format", "json")
    if output not in FORMATS:
        raise ApiError(400, "invalid_format", f"'format' must be one of {', '.join(FORMATS)}, not {output[:20]!r}")
    started = time.perf_counter()
    asked = _answer(request.args.get("q"), k, scope_from_query(request.args), request.args.get("sort"))
    if output == "csv":
        return Response(citations_csv(asked.citations), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="citations.csv"'})
    return jsonify(QAService.response(asked, started))


@api.post("/ask")
def ask_post():
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", 'the request body must be a JSON object such as {"question": "...", "k": 5}')
    unknown = set(body) - {"question", "k", "sort", *FILTER_FIELDS}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    scope = parse_scope(**{f: body.get(f) for f in FILTER_FIELDS})
    return jsonify(QAService.response(_answer(body.get("question"), body.get("k"), scope, body.get("sort")), started))


@api.get("/sources")
def sources():
    return jsonify({"sources": _service().sources()})


UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file


def _after_change(change: dict):
    """Answer a source change with the incremental rebuild it starts (or why none could start)."""
    try:
        state = current_app.extensions["qa_rebuild"].start(full=False)
    except BuildBusy as err:
        state = {"state": "busy", "error": f"{err}; the next build (POST /api/index) picks the change up"}
    return jsonify({**change, "rebuild": state}), 202


def _sources_settings():
    """Settings whose sources folder is the one the next build reads (the index's own), so an
    uploaded or deleted file is in the folder that gets rebuilt."""
    settings = current_app.extensions["qa_settings"]
    try:
        return replace(settings, sources_dir=IndexBuilder(settings, embedder=_service().embedder).sources_folder())
    except SourcesMismatch as err:
        raise ApiError(409, "sources_mismatch", str(err)) from None


def _indexed_sources() -> dict:
    try:
        return _service().index().sources
    except ServiceUnavailable:  # no or an empty index yet: the first upload is what it needs
        return {}


@api.post("/sources")
def add_source():
    from qa.uploads import store_upload

    _require_admin()
    settings = _sources_settings()
    request.max_content_length = settings.max_source_bytes + UPLOAD_OVERHEAD
    if (request.content_length or 0) > request.max_content_length:
        raise ApiError(413, "file_too_large", f"the upload is over the {settings.max_source_bytes:,}-byte limit for one file")
    files = request.files.getlist("file")
    if len(files) != 1 or set(request.files) != {"file"} or request.form:
        raise ApiError(400, "invalid_upload", "send exactly one file as the multipart/form-data field 'file'")
    sid, name = store_upload(settings, files[0].filename or "", files[0].read(), set(_indexed_sources()))
    return _after_change({"id": sid, "file": name})


@api.delete("/sources/<path:source_id>")
def delete_source(source_id: str):
    from qa.uploads import remove_source

    _require_admin()
    found = _indexed_sources().get(source_id)
    if found is None:
        raise ApiError(404, "unknown_source", f"no source with id {source_id!r}; GET /api/sources lists them")
    return _after_change({"id": source_id, "file": remove_source(_sources_settings(), found)})


@api.get("/sources/<path:source_id>")
def source(source_id: str):
    # Ids come from the index only; a path-like id is just an unknown id and touches no file.
    found = _service().source(source_id)
    if found is None:
        raise ApiError(404, "unknown_source", f"no source with id {source_id!r}; GET /api/sources lists them")
    return jsonify(found)


@api.get("/health")
def health():
    status = _service().health()
    return jsonify(status), 200 if status["status"] == "ok" else 503


def _require_admin() -> None:
    settings = current_app.extensions["qa_settings"]
    if settings.chroma_index:
        raise ApiError(409, "stateless_worker", f"this worker serves index {settings.chroma_index} as published on "
                       f"{settings.chroma_url}; change sources and rebuild where it is built (`qa index`)")
    token = settings.admin_token
    if not token:
        raise ApiError(403, "admin_disabled", "rebuilds and source changes over HTTP are disabled: set QA_ADMIN_TOKEN on the server to enable them")
    given = request.headers.get("Authorization", "")
    scheme, _, credential = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "send the admin token as 'Authorization: Bearer <QA_ADMIN_TOKEN>'")


@api.post("/index")
def start_rebuild():
    _require_admin()
    body = request.get_json(force=True, silent=True) if request.get_data() else {}
    if (not isinstance(body, dict) or set(body) - {"full", "sources"} or not isinstance(body.get("full", False), bool)
            or not isinstance(body.get("sources", ""), str)):
        raise ApiError(400, "invalid_json", 'the body must be empty or {"full": true|false, "sources": "<folder>"}')
    runner = current_app.extensions["qa_rebuild"]
    try:
        state = runner.start(full=body.get("full", False), sources=runner.allowed_sources(body.get("sources")))
    except ValueError as err:
        raise ApiError(400, "sources_not_allowed", str(err)) from None
    except SourcesMismatch as err:
        raise ApiError(409, "sources_mismatch", str(err)) from None
    except BuildBusy as err:
        raise ApiError(409, "build_running", str(err)) from None
    return jsonify(state), 202


@api.get("/index")
def rebuild_state():
    _require_admin()
    return jsonify(current_app.extensions["qa_rebuild"].state())


@api.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@api.errorhandler(ApiError)
def _api_error(err: ApiError):
    response = error_response(err.status, err.code, err.message)
    if err.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


@api.errorhandler(FilterError)
def _bad_filter(err: FilterError):  # malformed, or naming ids or outlets the index does not hold
    return error_response(400, err.code, err.message)


@api.errorhandler(ServiceUnavailable)
def _unavailable(err: ServiceUnavailable):
    return error_response(503, "index_unavailable", str(err))


@api.errorhandler(ModelError)
def _no_model(err: ModelError):
    return error_response(503, "model_unavailable", str(err))


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
              415: "unsupported_media_type", 431: "headers_too_large"}


def http_error_json(err: HTTPException):
    code = HTTP_CODES.get(err.code or 500, "http_error")
    message = {
        404: f"no such route: {request.method} {request.path}",
        405: f"method {request.method} is not allowed on {request.path}",
        413: f"the request body is larger than {(request.max_content_length or 0) // 1024:,} KiB",
    }.get(err.code or 500, err.description or "request rejected")
    response = error_response(err.code or 500, code, message)
    if err.code == 405 and err.valid_methods:
        response.headers["Allow"] = ", ".join(err.valid_methods)
    return response
