"""The OpenAPI documents under gen/openapi, written by tools/protoc_gen_openapi.py.

They must be valid OpenAPI 3.1, document every google.api.http rule of the contracts (read
from gen/descriptor.binpb, the descriptor set Envoy's transcoder loads), and match what the
plugin writes today for that descriptor set (no drift).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2, httpbody_pb2  # registers google.api.http
from google.protobuf import any_pb2, descriptor_pb2, text_format
from google.protobuf.compiler import plugin_pb2
from google.protobuf.message import DecodeError
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "gen" / "openapi"
DESCRIPTOR_SET = ROOT / "gen" / "descriptor.binpb"
PLUGIN = ROOT / "tools" / "protoc_gen_openapi.py"
VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
VERBS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def documents() -> dict[str, dict[str, Any]]:
    docs = {
        str(path.relative_to(OPENAPI)): json.loads(path.read_text())
        for path in sorted(OPENAPI.rglob("*.openapi.json"))
    }
    assert docs, f"no *.openapi.json under {OPENAPI}: run buf generate"
    return docs


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    except DecodeError as exc:  # e.g. binary written through a text (UTF-8) channel
        raise AssertionError(f"{DESCRIPTOR_SET} is not a FileDescriptorSet: {exc}") from exc


def http_rules() -> list[tuple[str, str, str, str]]:
    """(service, method, verb, path template) of every rule and additional binding."""
    rules = []
    for f in descriptor_set().file:
        for service in f.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    kind = binding.WhichOneof("pattern")
                    assert kind is not None, f"{method.name}: binding without a pattern"
                    if kind == "custom":
                        verb, template = binding.custom.kind.lower(), binding.custom.path
                    else:
                        verb, template = kind, getattr(binding, kind)
                    rules.append((service.name, method.name, verb, template))
    return rules


def run_plugin(request: plugin_pb2.CodeGeneratorRequest) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(PLUGIN)],
        input=request.SerializeToString(),
        capture_output=True,
        check=True,
    )
    response = plugin_pb2.CodeGeneratorResponse.FromString(done.stdout)
    assert not response.error, response.error
    assert response.supported_features & response.FEATURE_PROTO3_OPTIONAL
    return {f.name: f.content for f in response.file}


def path_params(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}


def test_documents_are_valid_openapi_31() -> None:
    for name, doc in documents().items():
        assert doc["openapi"] == "3.1.0", name
        validate(doc)  # raises on an invalid document


def test_path_parameters_match_path_templates() -> None:
    for name, doc in documents().items():
        for path, operations in doc["paths"].items():
            variables = set(VARIABLE.findall(path))
            for verb, operation in operations.items():
                assert path_params(operation) == variables, f"{name}: {verb} {path}"


def test_every_http_rule_is_documented() -> None:
    rules = http_rules()
    assert rules, f"no google.api.http rule in {DESCRIPTOR_SET}"
    operations = {
        (VARIABLE.sub(r"{\1}", path), verb): operation
        for doc in documents().values()
        for path, verbs in doc["paths"].items()
        for verb, operation in verbs.items()
    }
    for service, method, verb, template in rules:
        assert verb in VERBS, f"{service}.{method}: {verb} is not an HTTP method"
        path = VARIABLE.sub(lambda m: "{" + m.group(1).strip() + "}", template)
        operation = operations.get((path, verb))
        assert operation is not None, f"{service}.{method}: {verb.upper()} {path} not documented"
        assert operation["operationId"].startswith(f"{service}_{method}"), (verb, path)
        assert path_params(operation) == {v.strip() for v in VARIABLE.findall(template)}


def test_documents_match_the_descriptor_set() -> None:
    """Regenerating from gen/descriptor.binpb gives the committed bytes (no drift)."""
    files = descriptor_set().file
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=[f.name for f in files if not f.name.startswith("google/")],
        proto_file=files,
    )
    generated = run_plugin(request)
    on_disk = {name: (OPENAPI / name).read_text() for name in documents()}
    assert generated == on_disk


def test_order_create_contract() -> None:
    doc = documents()["shop/order/v1/order.openapi.json"]
    assert doc["info"]["title"] == "shop.order.v1"
    assert doc["info"]["version"] == "v1"
    create = doc["paths"]["/v1/orders"]["post"]
    assert create["operationId"] == "OrderService_CreateOrder"
    headers = {p["name"]: p for p in create["parameters"] if p["in"] == "header"}
    assert {"X-Tenant-Id", "Idempotency-Key"} <= headers.keys()
    assert headers["X-Tenant-Id"]["required"] is False  # the tenant is the token's
    assert headers["Idempotency-Key"]["required"] is True
    assert (create["security"], create["x-shop-access"]) == ([{"bearer": []}], "authenticated")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(create["responses"]) == {"201", "200", "default"}
    created = create["responses"]["201"]
    assert set(created["headers"]) == {"ETag", "Idempotent-Replayed"}
    # A replay (same key and body) is a success too, with the same body and headers.
    replayed = create["responses"]["200"]
    assert "replay" in replayed["description"].lower()
    assert (replayed["content"], replayed["headers"]) == (created["content"], created["headers"])
    order_ref = "#/components/schemas/shop.order.v1.Order"
    assert created["content"]["application/json"]["schema"] == {"$ref": order_ref}
    error = create["responses"]["default"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    order = doc["components"]["schemas"]["shop.order.v1.Order"]["properties"]
    assert order["totalCents"]["type"] == "integer"
    assert order["totalCents"]["format"] == "int32"
    assert order["createdAt"]["type"] == "string"
    assert order["createdAt"]["format"] == "date-time"
    assert "created_at" not in order  # proto3 JSON names, not proto names
    confirm = doc["paths"]["/v1/orders/{id}/confirm"]["patch"]
    body = confirm["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"totalCents"}  # `id` is bound by the path
    list_orders = doc["paths"]["/v1/orders"]["get"]
    assert {p["name"] for p in list_orders["parameters"] if p["in"] == "query"} == {
        "limit",
        "cursor",
    }


DEMO = """
name: "demo/v1/demo.proto" package: "demo.v1" syntax: "proto3"
dependency: ["google/api/annotations.proto", "google/api/httpbody.proto"]
message_type {
  name: "Thing"
  field { name: "big_count" number: 1 type: TYPE_INT64 label: LABEL_OPTIONAL json_name: "bigCount" }
  field { name: "kind" number: 2 type: TYPE_ENUM type_name: ".demo.v1.Kind"
          label: LABEL_OPTIONAL json_name: "kind" }
  field { name: "tags" number: 3 type: TYPE_STRING label: LABEL_REPEATED json_name: "tags" }
}
message_type {
  name: "GetThingRequest"
  field { name: "name" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL json_name: "name" }
  field { name: "page_size" number: 2 type: TYPE_UINT64 label: LABEL_OPTIONAL json_name: "pageSize" }
}
enum_type { name: "Kind" value { name: "KIND_UNSPECIFIED" number: 0 } value { name: "KIND_A" number: 1 } }
service {
  name: "ThingService"
  method {
    name: "GetThing" input_type: ".demo.v1.GetThingRequest" output_type: ".demo.v1.Thing"
    options { [google.api.http] { get: "/v1/{name=things/*}"
                                  additional_bindings { post: "/v1/things:get" body: "*" } } }
  }
  method {
    name: "Download" input_type: ".demo.v1.GetThingRequest" output_type: ".google.api.HttpBody"
    options { [google.api.http] { get: "/v1/{name=things/*}:download" } }
  }
}
"""


def test_plugin_maps_proto3_json_and_http_body() -> None:
    imports = []
    for module in (http_pb2, descriptor_pb2, annotations_pb2, any_pb2, httpbody_pb2):
        imports.append(descriptor_pb2.FileDescriptorProto())
        module.DESCRIPTOR.CopyToProto(imports[-1])
    demo = text_format.Parse(DEMO, descriptor_pb2.FileDescriptorProto())
    request = plugin_pb2.CodeGeneratorRequest(
        file_to_generate=["demo/v1/demo.proto"], proto_file=[*imports, demo]
    )
    doc = json.loads(run_plugin(request)["demo/v1/demo.openapi.json"])
    validate(doc)
    get = doc["paths"]["/v1/{name}"]["get"]
    assert get["operationId"] == "ThingService_GetThing"
    query = {p["name"]: p["schema"] for p in get["parameters"] if p["in"] == "query"}
    assert query == {"pageSize": {"type": "string", "format": "uint64"}}
    assert doc["paths"]["/v1/things:get"]["post"]["operationId"] == "ThingService_GetThing_2"
    thing = doc["components"]["schemas"]["demo.v1.Thing"]["properties"]
    assert thing["bigCount"] == {"type": "string", "format": "int64"}
    assert thing["kind"] == {"type": "string", "enum": ["KIND_UNSPECIFIED", "KIND_A"]}
    assert thing["tags"] == {"type": "array", "items": {"type": "string"}}
    download = doc["paths"]["/v1/{name}:download"]["get"]["responses"]["200"]["content"]
    assert download == {"*/*": {"schema": {"type": "string"}}}
    assert "google.api.HttpBody" not in doc["components"]["schemas"]


def test_every_replay_and_duplicate_is_a_documented_success() -> None:
    docs = documents()
    for name, path, verb, first in [
        ("shop/order/v1/order.openapi.json", "/v1/orders", "post", "201"),
        ("shop/product/v1/product.openapi.json", "/v1/products", "post", "201"),
        ("shop/event/v1/event.openapi.json", "/v1/events", "post", "202"),
        ("shop/event/v1/event.openapi.json", "/v1/events/{source}", "post", "202"),
        ("shop/event/v1/event.openapi.json", "/v1/admin/events", "post", "202"),
    ]:
        responses = docs[name]["paths"][path][verb]["responses"]
        assert set(responses) == {first, "200", "default"}, (path, set(responses))
        assert responses["200"]["content"] == responses[first]["content"], path


def test_the_error_component_is_the_one_error_shape() -> None:
    for name, doc in documents().items():
        schemas = doc["components"]["schemas"]
        error = schemas["Error"]
        assert error["required"] == ["code", "message", "details"], name
        assert error["additionalProperties"] is False
        details = error["properties"]["details"]
        assert details["type"] == "array"
        refs = [item["$ref"].rsplit("/", 1)[1] for item in details["items"]["oneOf"]]
        assert refs == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]
        info = schemas["google.rpc.ErrorInfo"]
        assert info["properties"]["@type"] == {"const": "type.googleapis.com/google.rpc.ErrorInfo"}
        assert info["properties"]["domain"]["enum"] == ["shop.platform", "edge"]
        for path, verbs in doc["paths"].items():
            for verb, operation in verbs.items():
                default = operation["responses"]["default"]["content"]["application/json"]
                assert default["schema"] == {"$ref": "#/components/schemas/Error"}, (verb, path)


def test_every_error_code_is_in_the_error_component() -> None:
    from services.kit import errors
    from services.launcher.edge import LOCAL_REPLY_CODES

    lua = (ROOT / "envoy" / "edge.lua").read_text()
    codes = set(documents()["shop/order/v1/order.openapi.json"]["components"]["schemas"]
                ["Error"]["properties"]["code"]["enum"])  # fmt: skip
    tree = {cls.code for cls in vars(errors).values() if isinstance(cls, type)
            and issubclass(cls, errors.PlatformError)}  # fmt: skip
    assert tree <= codes
    assert {code for _, code in LOCAL_REPLY_CODES} <= codes
    assert set(re.findall(r'"([a-z_]+)"', lua.split("GRPC_TO_CODE = {")[1].split("}")[0])) <= codes


def test_the_jwks_is_declared_as_json_keys() -> None:
    doc = documents()["shop/user/v1/user.openapi.json"]
    for path in ("/.well-known/jwks.json", "/v1/auth/jwks"):
        content = doc["paths"][path]["get"]["responses"]["200"]["content"]
        assert content == {
            "application/json": {"schema": {"$ref": "#/components/schemas/shop.user.v1.Jwks"}}
        }
    jwks = doc["components"]["schemas"]["shop.user.v1.Jwks"]["properties"]["keys"]
    assert jwks["items"] == {"$ref": "#/components/schemas/shop.user.v1.Jwk"}
    jwk = doc["components"]["schemas"]["shop.user.v1.Jwk"]["properties"]
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
