"""The OpenAPI 3.1 document of the API (`GET /openapi.json`): the endpoints, their responses, and the search and
export parameters generated from `params.PARAMETERS` (the same table that validates them)."""

from __future__ import annotations

from typing import Any

from firehose.config import Settings
from firehose.params import openapi_parameters
from firehose.sources import SCAN_REASONS, VIA

JSON_TYPE = "application/json"


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint of `create_app`."""
    error = {"$ref": "#/components/responses/Error"}
    post_props = {
        "timestamp": {"type": "string", "format": "date-time", "description": "Event time (time_us) in UTC."},
        "username": {"type": "string", "description": "Author handle, or the DID when the handle is unknown."},
        "text": {"type": ["string", "null"]},
        "uri": {"type": "string"}, "did": {"type": "string"}, "cid": {"type": ["string", "null"]},
        "time_us": {"type": "integer", "description": "Jetstream event time, unix microseconds."},
        "created_at": {"type": ["string", "null"], "description": "createdAt as claimed by the client."},
        "langs": {"type": ["array", "null"], "items": {"type": "string"}},
        "reply_parent_uri": {"type": ["string", "null"]}, "reply_root_uri": {"type": ["string", "null"]},
        "embed_type": {"type": ["string", "null"]}, "embed_uri": {"type": ["string", "null"]},
        "mentions": {"type": ["array", "null"], "items": {"type": "string"}},
        "links": {"type": ["array", "null"], "items": {"type": "string"}},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    }
    check = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
             "additionalProperties": True}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bluesky firehose archive API", "version": "1.0.0",
                 "description": "Search and export of archived Bluesky posts. Errors are JSON "
                                "{\"error\": {\"parameter\", \"message\"}}."},
        "paths": {
            "/search": {"get": {
                "summary": "Search posts, newest first, one page at a time",
                "parameters": openapi_parameters(settings, export=False),
                "responses": {"200": {"description": "A page of results", "content": {JSON_TYPE: {"schema": {
                    "$ref": "#/components/schemas/SearchResponse"}}}},
                    "400": error, "401": error, "404": error, "429": error, "500": error, "504": error},
            }},
            "/export": {"get": {
                "summary": "The same search as CSV (header row, then one row per post)",
                "parameters": openapi_parameters(settings, export=True),
                "responses": {"200": {"description": "CSV attachment (Content-Disposition: attachment; "
                                      "filename=\"bluesky-posts-<UTC time>.csv\"); lists are JSON arrays. A "
                                      "complete export is the header and the data rows. One cut short (more matches "
                                      "than limit, FIREHOSE_API_EXPORT_TIMEOUT reached, a server error) ends with "
                                      "one more row of the header's width whose first cell reads \"# truncated: "
                                      "<timeout|limit|error> ...; <n> rows; resume with <end|start>=<time> ...\" "
                                      "(a data row's first cell is always a time); no HTTP trailer is sent. See "
                                      "docs/api.md, Export.",
                                      "content": {"text/csv": {"schema": {"type": "string"}}}},
                              "400": error, "401": error, "403": error, "429": error, "500": error,
                              "504": error},
            }},
            "/health": {"get": {"summary": "Can it serve, and is what it serves complete and fresh", "responses": {
                "200": {"description": "Serving: status ok, or degraded with the reasons",
                        "content": {JSON_TYPE: {"schema": {
                    "$ref": "#/components/schemas/Health"}}}},
                "503": {"description": "Nothing can be served (status fail)", "content": {JSON_TYPE: {"schema": {
                    "$ref": "#/components/schemas/Health"}}}}, "400": error}}},
            "/metrics": {"get": {"summary": "Prometheus metrics of all workers", "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {
                    "type": "string"}}}}, "400": error}}},
            "/stats": {"get": {"summary": "Rows, files and bytes per table per day (from Parquet footers)",
                               "responses": {"200": {"description": "Table statistics", "content": {JSON_TYPE: {
                                   "schema": {"$ref": "#/components/schemas/Stats"}}}}, "400": error}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {JSON_TYPE: {"schema": {"type": "object"}}}},
                "400": error}}},
        },
        "components": {
            "responses": {"Error": {"description": "Invalid input (400), unknown API key (401), export without "
                                    "a key where one is required (403), unknown path (404), method (405), over the "
                                    "rate or export limit (429, with Retry-After), query past its time budget (504) "
                                    "or internal error (500)",
                                    "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["parameter", "message"],
                    "properties": {"parameter": {"type": ["string", "null"]}, "message": {"type": "string"}}}}},
                "Post": {"type": "object", "properties": post_props,
                         "required": ["timestamp", "username", "text", "uri", "did"]},
                "SearchResponse": {"type": "object", "required": ["results", "meta"], "properties": {
                    "results": {"type": "array", "items": {"$ref": "#/components/schemas/Post"}},
                    "meta": {"type": "object", "required": ["count", "cursor", "limit", "total_cap", "query", "took_ms",
                                                            "days", "unverified_dids"], "properties": {
                        "count": {"type": "integer"},
                        "cursor": {"type": ["string", "null"], "description": "Pass as cursor for the next page; "
                                   "null when there are no more results or the total cap is reached."},
                        "limit": {"type": "integer"}, "served": {"type": "integer"},
                        "total_cap": {"type": "integer", "const": settings.api_max_results},
                        "query": {"type": "object", "description": "The normalised parameters."},
                        "took_ms": {"type": "number"},
                        "days": {"type": "array", "description": "How each day was read, in the order read (the "
                                 "hot tier first): through its full-text index, by a scan of its Parquet (with "
                                 "the reason), or from the hot tier (posts not yet flushed).", "items": {
                                     "$ref": "#/components/schemas/DaySource"}},
                        "unverified_dids": {"type": "array", "items": {"type": "string"}, "description": (
                            "The DIDs of the results whose username is the handle the account's DID document "
                            "claims, shown before the check that the handle points back to the account finished "
                            "(it goes on; a later page shows the verified answer, or the DID).")},
                        "warnings": {"type": "array", "items": {"type": "string"}}}}}},
                "DaySource": {"type": "object", "required": ["date", "via"], "properties": {
                    "date": {"type": "string", "format": "date"},
                    "via": {"type": "string", "enum": list(VIA)},
                    "reason": {"type": "string", "enum": list(SCAN_REASONS),
                               "description": "Why a day was scanned: the search has no text, or the day's index "
                               "is missing, cannot be read, or does not hold exactly the day's posts."}}},
                "Health": {"type": "object", "required": ["status", "checks"], "properties": {
                    "status": {"type": "string", "enum": ["ok", "fail"]},
                    "checks": {"type": "object", "properties": {
                        "redis": check, "data_dir": check,
                        "freshness": {**check, "properties": {"ok": {"type": "boolean"},
                                                              "newest_event_age_s": {"type": ["number", "null"]}}}}},
                    "time": {"type": "string"}}},
                "Stats": {"type": "object", "properties": {"tables": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {
                        "rows": {"type": "integer"}, "bytes": {"type": "integer"},
                        "days": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                            "rows": {"type": "integer"}, "files": {"type": "integer"},
                            "bytes": {"type": "integer"}}}}}}}, "time": {"type": "string"}}},
            },
        },
    }
