"""The OpenAPI 3 description of the JSON API; the test suite fuzzes the API against it."""
from __future__ import annotations

from functools import cache

# A character the API does not strip as white space: exactly what Python's str.strip() removes,
# spelled out because regex engines (Hypothesis's generator among them) disagree on what `\S` excludes.
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

NULLABLE_STRING = {"type": "string", "nullable": True}
ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _ok(schema_ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


@cache
def openapi_document() -> dict:
    from qa.api import DEFAULT_K, MAX_K, MAX_QUESTION_CHARS
    from qa.filters import MAX_VALUE_CHARS, MAX_VALUES
    from qa.recency import SORTS

    question = {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS, "pattern": NOT_BLANK}
    k = {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K}
    source_meta = {
        "type": "object",
        "required": ["id", "title", "outlet", "published", "url"],
        "properties": {
            "id": {"type": "string"},
            "title": NULLABLE_STRING,
            "outlet": NULLABLE_STRING,
            "author": NULLABLE_STRING,
            "published": NULLABLE_STRING,
            "url": NULLABLE_STRING,
            "language": NULLABLE_STRING,
        },
    }
    names = {"type": "array", "minItems": 1, "maxItems": MAX_VALUES,
             "items": {"type": "string", "minLength": 1, "maxLength": MAX_VALUE_CHARS, "pattern": NOT_BLANK}}
    iso_date = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
    filters = {
        "sources": {**names, "description": "source ids (GET /api/sources); only passages from these"},
        "outlets": {**names, "description": "outlet names (case-insensitive); only passages from sources of these outlets"},
        "published_after": {**iso_date, "description": "inclusive; sources without a date are left out"},
        "published_before": {**iso_date, "description": "inclusive; sources without a date are left out"},
    }
    sort = {"type": "string", "enum": list(SORTS), "default": "relevance",
            "description": "relevance, or the same results newest source first (undated last)"}
    filter_parameters = [{"name": name, "in": "query", "required": False, "schema": schema,
                          **({"style": "form", "explode": True} if schema["type"] == "array" else {})}
                         for name, schema in filters.items()]
    source_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    span = {"type": "object", "required": ["start", "end"],
            "properties": {"start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 0},
                           "page": {"type": "integer", "minimum": 1, "nullable": True}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Citation-first Q&A",
            "version": "1.0.0",
            "description": "Ask questions; get verbatim passages whose spans index the source text served by /api/sources/{id}.",
        },
        "paths": {
            "/api/ask": {
                "get": {
                    "summary": "Ask a question (query string)",
                    "parameters": [
                        {"name": "q", "in": "query", "required": True, "schema": question},
                        {"name": "k", "in": "query", "required": False, "schema": k},
                        *filter_parameters,
                        {"name": "sort", "in": "query", "required": False, "schema": sort},
                        {"name": "format", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"}},
                    ],
                    "responses": {"200": {"description": "Ranked passages (JSON), or their citations as CSV with format=csv",
                                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AskResponse"}},
                                                      "text/csv": {"schema": {"type": "string"}}}},
                                  "400": ERROR, "503": ERROR},
                },
                "post": {
                    "summary": "Ask a question (JSON body)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {
                            "type": "object", "required": ["question"], "additionalProperties": False,
                            "properties": {"question": question, "k": k, "sort": sort, **filters},
                        }}},
                    },
                    "responses": {"200": _ok("AskResponse", "Ranked passages"), "400": ERROR, "413": ERROR, "503": ERROR},
                },
            },
            "/api/sources": {
                "get": {"summary": "List sources", "responses": {"200": _ok("SourceList", "Sources"), "503": ERROR}},
                "post": {
                    "summary": "Add one source file and start an incremental rebuild (admin)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["file"], "additionalProperties": False,
                        "properties": {"file": {"type": "string", "format": "binary"}}}}}},
                    "responses": {"202": _ok("SourceChange", "Stored; rebuild started"), "400": ERROR, "401": ERROR,
                                  "403": ERROR, "409": ERROR, "413": ERROR, "415": ERROR},
                },
            },
            "/api/sources/{id}": {
                "get": {
                    "summary": "One source with its cleaned text",
                    "parameters": [source_id],
                    "responses": {"200": _ok("SourceText", "The source"), "404": ERROR, "503": ERROR},
                },
                "delete": {
                    "summary": "Remove the file behind one source and start an incremental rebuild (admin)",
                    "security": [{"bearer": []}],
                    "parameters": [source_id],
                    "responses": {"202": _ok("SourceChange", "Removed; rebuild started"), "401": ERROR, "403": ERROR,
                                  "404": ERROR, "409": ERROR},
                },
            },
            "/api/index": {
                "post": {
                    "summary": "Start a rebuild of the index (admin; enabled by QA_ADMIN_TOKEN)",
                    "security": [{"bearer": []}],
                    "requestBody": {"required": False, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False, "properties": {
                        "full": {"type": "boolean"},
                        "sources": {"type": "string", "description": "confirms a switch to this folder (the server's or the index's)"}}}}}},
                    "responses": {"202": _ok("RebuildState", "Started"), "400": ERROR, "401": ERROR, "403": ERROR, "409": ERROR},
                },
                "get": {
                    "summary": "State of the last rebuild (admin)",
                    "security": [{"bearer": []}],
                    "responses": {"200": _ok("RebuildState", "State"), "401": ERROR, "403": ERROR},
                },
            },
            "/api/health": {"get": {"summary": "Service status", "responses": {"200": _ok("Health", "Ready"), "503": _ok("Health", "Not ready")}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "RebuildState": {"type": "object", "required": ["state"], "properties": {
                    "state": {"type": "string", "enum": ["idle", "running", "succeeded", "failed"]},
                    "id": {"type": "string"}, "pid": {"type": "integer"}, "version": {"type": "string"},
                    "error": {"type": "string"}, "warnings": {"type": "array", "items": {"type": "string"}}}},
                "SourceChange": {"type": "object", "required": ["id", "file", "rebuild"], "properties": {
                    "id": {"type": "string"}, "file": {"type": "string"},
                    "rebuild": {"type": "object", "required": ["state"], "properties": {"state": {"type": "string"}}}}},
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                                             "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
                },
                "Source": source_meta,
                "SourceList": {"type": "object", "required": ["sources"],
                               "properties": {"sources": {"type": "array", "items": {"$ref": "#/components/schemas/Source"}}}},
                "SourceText": {"allOf": [{"$ref": "#/components/schemas/Source"},
                                         {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}]},
                "AskResponse": {
                    "type": "object",
                    "required": ["question", "answered", "took_ms", "index_version", "results"],
                    "properties": {
                        "question": {"type": "string"},
                        "answered": {"type": "boolean"},
                        "confidence": {"type": "number"},
                        "took_ms": {"type": "number", "minimum": 0},
                        "index_version": {"type": "string"},
                        "scope": {"type": "object", "nullable": True, "required": ["sources", "undated_excluded"],
                                  "description": "with a filter: the sources inside it, and those a date filter left out for stating no date",
                                  "properties": {"sources": {"type": "integer", "minimum": 0},
                                                 "undated_excluded": {"type": "integer", "minimum": 0}}},
                        "results": {"type": "array", "items": {
                            "type": "object",
                            "required": ["rank", "score", "text", "source", "span", "highlight"],
                            "properties": {
                                "rank": {"type": "integer", "minimum": 1},
                                "score": {"type": "number"},
                                "relevance": {"type": "number"},
                                "text": {"type": "string"},
                                "source": {"$ref": "#/components/schemas/Source"},
                                "span": span,
                                "highlight": {"allOf": [span, {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}]},
                                "sources_agreeing": {"type": "integer", "minimum": 1,
                                                     "description": "this source and every other stating the marked sentence's fact"},
                                "corroborated_by": {"type": "array", "items": {"$ref": "#/components/schemas/Report"},
                                                    "description": "the sentence of each other source stating the same fact (same dates and numbers)"},
                                "disputed_by": {"type": "array", "items": {"$ref": "#/components/schemas/Report"},
                                                "description": "the sentence of each other source stating another date or number for it"},
                            },
                        }},
                    },
                },
                "Report": {
                    "type": "object", "required": ["source", "span", "text", "similarity"],
                    "properties": {"source": {"$ref": "#/components/schemas/Source"}, "span": span,
                                   "text": {"type": "string"}, "similarity": {"type": "number"}},
                },
                "Health": {
                    "type": "object", "required": ["status", "sources", "chunks", "index_version"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "unavailable"]},
                        "sources": {"type": "integer"}, "chunks": {"type": "integer"},
                        "index_version": {"type": "string", "nullable": True},
                        "error": {"type": "string"}, "warning": {"type": "string"},
                    },
                },
            }
        },
    }
