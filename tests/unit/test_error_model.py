"""The error model's one table and every place that restates it in another language."""

from __future__ import annotations

import json
import re

import grpc

from services.kit import error_model
from services.launcher import ROOT
from services.launcher.edge import LOCAL_REPLY_CODES, local_reply_mappers

LUA = (ROOT / "envoy" / "edge.lua").read_text()


def _lua_table(name: str) -> str:
    start = LUA.index(f"local {name} = {{")
    return LUA[start : LUA.index("\n}", start)]


def test_edge_lua_maps_each_code_to_the_tables_http_status() -> None:
    pairs = re.findall(r'(\w+) = "(\d{3})"', _lua_table("CODE_TO_HTTP"))
    assert len(pairs) == len(set(pairs)), "CODE_TO_HTTP names a code twice"
    assert {code: int(http) for code, http in pairs} == error_model.code_to_http()


def test_edge_lua_reads_bare_grpc_statuses_as_the_tables_codes() -> None:
    pairs = re.findall(r'\[(\d+)\] = "(\w+)"', _lua_table("GRPC_TO_CODE"))
    assert len(pairs) == len(set(pairs)), "GRPC_TO_CODE names a status twice"
    assert {int(number): code for number, code in pairs} == error_model.grpc_to_code()


def test_every_failed_grpc_status_reads_back_as_exactly_one_code() -> None:
    listed = [s for row in error_model.ERROR_MODEL for s in row.from_grpc]
    assert sorted(listed, key=lambda s: s.value[0]) == [
        s for s in grpc.StatusCode if s is not grpc.StatusCode.OK
    ]


def test_a_code_sent_by_its_own_status_reads_back_as_itself_or_its_kin() -> None:
    # A status that loses its x-error-code on the way still lands in the same HTTP class.
    by_status = error_model.grpc_to_code()
    for row in error_model.ERROR_MODEL:
        back = error_model.BY_CODE[by_status[row.grpc_status.value[0]]]
        assert back.http // 100 == row.http // 100, row.code


def test_codes_are_unique_lowercase_words() -> None:
    assert len(set(error_model.CODES)) == len(error_model.CODES)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", code) for code in error_model.CODES)


def test_envoys_local_replies_follow_the_table() -> None:
    assert error_model.local_reply_codes() == LOCAL_REPLY_CODES
    rendered = [json.loads(line.strip()[2:]) for line in local_reply_mappers().splitlines()]
    codes = [m["body_format_override"]["json_format"]["code"] for m in rendered]
    assert codes == [code for _, code in LOCAL_REPLY_CODES] + ["internal"]


def test_the_openapi_error_enum_is_the_tables_codes() -> None:
    for path in sorted((ROOT / "gen" / "openapi").rglob("*.openapi.json")):
        doc = json.loads(path.read_text())
        enum = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        assert enum == list(error_model.CODES), path
