"""A buf local plugin that writes one OpenAPI 3.1 document per proto package with HTTP routes.

Reads a CodeGeneratorRequest on stdin and writes a CodeGeneratorResponse on stdout. For every
package of the files to generate (files under google/ are skipped) whose services carry
`google.api.http` rules it writes `<package dir>/<area>.openapi.json` (shop.order.v1, from
order.proto, notifications.proto and reports.proto: shop/order/v1/order.openapi.json) with:
- one operation per rule and additional binding (path, query and header parameters, body);
- schemas in the proto3 JSON mapping: json_name properties, 64-bit integers as strings, enums
  as value names, well-known types as their JSON forms, google.api.HttpBody as raw content;
- leading comments (source_code_info) as descriptions and summaries;
- the request/response headers, success statuses and raw reply content of the
  `shop.api.v1.http_contract` option;
- the shared `Error` schema (tools/openapi_errors.py) as every operation's `default` response.
Method options are decoded through a descriptor pool built from the request's own files, so
neither gen/ nor googleapis-common-protos has to be importable. Output is deterministic
(sorted keys, indent 2, trailing newline) so a drift check can compare bytes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Collection, Iterable, Sequence
from http import HTTPStatus
from pathlib import PurePosixPath
from typing import Any, TypeAlias

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.compiler import plugin_pb2

# buf runs this file as a script: its folder is on sys.path.
from openapi_errors import ERROR_RESPONSE
from openapi_errors import SCHEMAS as ERROR_SCHEMAS

JSON = dict[str, Any]
Field: TypeAlias = descriptor_pb2.FieldDescriptorProto
Message: TypeAlias = descriptor_pb2.DescriptorProto
Enum: TypeAlias = descriptor_pb2.EnumDescriptorProto
VERBS = ("get", "put", "post", "delete", "patch")
HTTP_BODY = "google.api.HttpBody"
RAW: JSON = {"type": "string"}
PHRASES = {s.value: s.phrase for s in HTTPStatus}
VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")  # {id}, {a.b}, {name=things/*}
I32, U32 = {"type": "integer", "format": "int32"}, {"type": "integer", "format": "uint32"}
I64, U64 = {"type": "string", "format": "int64"}, {"type": "string", "format": "uint64"}
SCALARS: dict[int, JSON] = {
    Field.TYPE_DOUBLE: {"type": "number", "format": "double"},
    Field.TYPE_FLOAT: {"type": "number", "format": "float"},
    Field.TYPE_INT32: I32, Field.TYPE_SINT32: I32, Field.TYPE_SFIXED32: I32,
    Field.TYPE_UINT32: U32, Field.TYPE_FIXED32: U32,
    Field.TYPE_INT64: I64, Field.TYPE_SINT64: I64, Field.TYPE_SFIXED64: I64,
    Field.TYPE_UINT64: U64, Field.TYPE_FIXED64: U64,
    Field.TYPE_BOOL: {"type": "boolean"},
    Field.TYPE_STRING: {"type": "string"},
    Field.TYPE_BYTES: {"type": "string", "format": "byte"},
}  # fmt: skip
WRAPPERS = {
    "Double": Field.TYPE_DOUBLE, "Float": Field.TYPE_FLOAT, "Int64": Field.TYPE_INT64,
    "UInt64": Field.TYPE_UINT64, "Int32": Field.TYPE_INT32, "UInt32": Field.TYPE_UINT32,
    "Bool": Field.TYPE_BOOL, "String": Field.TYPE_STRING, "Bytes": Field.TYPE_BYTES,
}  # fmt: skip
# Well-known types whose JSON form is one value: usable as path and query parameters too.
SCALAR_WKT: dict[str, JSON] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "description": 'Seconds, e.g. "1.5s".'},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated paths."},
    **{
        f"google.protobuf.{k}Value": {**SCALARS[t], "type": [SCALARS[t]["type"], "null"]}
        for k, t in WRAPPERS.items()
    },
}
WELL_KNOWN: dict[str, JSON] = {
    **SCALAR_WKT,
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}


# Access tokens from POST /v1/auth/login, checked by the edge against the JWKS
# at /.well-known/jwks.json; "admin" methods also need the role claim "admin".
BEARER: JSON = {"bearer": []}
SECURITY_SCHEMES: JSON = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA)"}
}


def clean(comment: str) -> str:
    """A leading comment without the space after `//`, trailing blanks and blank edges."""
    lines = [line[1:] if line.startswith(" ") else line for line in comment.split("\n")]
    return "\n".join(line.rstrip() for line in lines).strip()


def summary(doc: str) -> str:
    """The first sentence of a comment's first paragraph."""
    first = " ".join(doc.split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", first)
    return match.group(1) if match else first


def type_of(field: Field) -> str:
    return field.type_name.lstrip(".")


class Index:
    """The request's messages and enums, and leading comments, all by full name."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, Message] = {}
        self.enums: dict[str, list[str]] = {}
        self.docs: dict[str, str] = {}
        for f in files:
            locs = {tuple(x.path): clean(x.leading_comments) for x in f.source_code_info.location}
            self._locs = locs
            self._walk(f.message_type, f.enum_type, f.package, (4,))
            for i, svc in enumerate(f.service):
                name = f"{f.package}.{svc.name}".lstrip(".")
                self.docs[name] = locs.get((6, i), "")
                for j, method in enumerate(svc.method):
                    self.docs[f"{name}.{method.name}"] = locs.get((6, i, 2, j), "")

    def _walk(
        self, msgs: Sequence[Message], enums: Sequence[Enum], scope: str, path: tuple[int, ...]
    ) -> None:
        locs = self._locs  # source_code_info paths: 4 message, 2 field, 3 nested, 6 service
        for enum in enums:
            self.enums[f"{scope}.{enum.name}".lstrip(".")] = [v.name for v in enum.value]
        for i, msg in enumerate(msgs):
            name, here = f"{scope}.{msg.name}".lstrip("."), (*path, i)
            self.messages[name], self.docs[name] = msg, locs.get(here, "")
            for j, field in enumerate(msg.field):
                self.docs[f"{name}.{field.name}"] = locs.get((*here, 2, j), "")
            self._walk(msg.nested_type, msg.enum_type, name, (*here, 3))

    def resolve(self, message: str, dotted: str) -> tuple[str, Field]:
        """The (owning message, field) that a dotted proto field path names."""
        *parents, last = dotted.split(".")
        for part in parents:
            message = type_of(self.field(message, part))
        return message, self.field(message, last)

    def field(self, message: str, name: str) -> Field:
        for field in self.messages[message].field:
            if field.name == name:
                return field
        raise ValueError(f"{message} has no field {name!r}")

    def map_entry(self, field: Field) -> Message | None:
        entry = self.messages.get(type_of(field))
        return entry if entry is not None and entry.options.map_entry else None


class Options:
    """Decodes method option extensions with a pool of the request's own files."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        pool = descriptor_pool.DescriptorPool()
        for f in files:
            pool.Add(f)
        self.extensions: dict[str, Any] = {}
        self.cls: Any = None
        for name in ("google.api.http", "shop.api.v1.http_contract", "shop.api.v1.access"):
            try:
                self.extensions[name] = pool.FindExtensionByName(name)
            except KeyError:  # no file of the request declares it: no method can use it
                continue
            self.cls = message_factory.GetMessageClass(self.extensions[name].containing_type)

    def get(self, options: descriptor_pb2.MethodOptions, name: str) -> JSON:
        """The extension as a dict (proto field names), {} when absent."""
        ext = self.extensions.get(name)
        parsed = self.cls.FromString(options.SerializeToString()) if ext else None
        if parsed is None or not parsed.HasExtension(ext):
            return {}
        return json_format.MessageToDict(parsed.Extensions[ext], preserving_proto_field_name=True)

    def access(self, options: descriptor_pb2.MethodOptions) -> str:
        """The method's `shop.api.v1.access` level: public, authenticated or admin."""
        ext = self.extensions.get("shop.api.v1.access")
        parsed = self.cls.FromString(options.SerializeToString()) if ext else None
        level = parsed.Extensions[ext] if parsed is not None and parsed.HasExtension(ext) else 0
        # Unannotated methods need a token, as the edge and the services enforce.
        return {1: "public", 3: "admin"}.get(level, "authenticated")


class Document:
    """The paths of one proto file and the component schemas they reference."""

    def __init__(self, index: Index, options: Options) -> None:
        self.index, self.options = index, options
        self.schemas: dict[str, JSON] = dict(ERROR_SCHEMAS)
        self.paths: dict[str, dict[str, JSON]] = {}

    def type_schema(self, name: str) -> JSON:
        if name in WELL_KNOWN:
            return dict(WELL_KNOWN[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: a recursive message stops here
            self.schemas[name] = self.message_schema(name)
        return {"$ref": f"#/components/schemas/{name}"}

    def message_schema(self, name: str, skip: Collection[str] = ()) -> JSON:
        fields = [f for f in self.index.messages[name].field if f.name not in skip]
        schema: JSON = {"type": "object", "properties": {}}
        schema["properties"] = {f.json_name: self.field_schema(name, f) for f in fields}
        if doc := self.index.docs.get(name):
            schema["description"] = doc
        return schema

    def value_schema(self, field: Field) -> JSON:
        if field.type in (Field.TYPE_MESSAGE, Field.TYPE_GROUP):
            return self.type_schema(type_of(field))
        if field.type == Field.TYPE_ENUM:
            if type_of(field) == "google.protobuf.NullValue":
                return {"type": "null"}
            return {"type": "string", "enum": self.index.enums[type_of(field)]}
        return dict(SCALARS[field.type])

    def field_schema(self, owner: str, field: Field, described: bool = True) -> JSON:
        if entry := self.index.map_entry(field):
            schema = {"type": "object", "additionalProperties": self.value_schema(entry.field[1])}
        elif field.label == Field.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value_schema(field)}
        else:
            schema = self.value_schema(field)
        if described and (doc := self.index.docs.get(f"{owner}.{field.name}")):
            schema["description"] = doc
        return schema

    def parameter(self, where: str, name: str, owner: str, field: Field) -> JSON:
        schema = self.field_schema(owner, field)
        param: JSON = {"name": name, "in": where, "schema": schema}
        if where == "path":
            param["required"] = True
        if "description" in schema:
            param["description"] = schema.pop("description")
        return param

    def query(self, message: str, skip: set[str], *within: str) -> list[JSON]:
        """Fields bound neither by path nor body; nested messages flatten to `a.b` (JSON names).

        `within` holds the enclosing (message, proto field name, JSON name) triples."""
        params: list[JSON] = []
        for f in self.index.messages[message].field:
            path, name = ".".join([*within[1::3], f.name]), ".".join([*within[2::3], f.json_name])
            if path in skip or self.index.map_entry(f):
                continue
            if f.type not in (Field.TYPE_MESSAGE, Field.TYPE_GROUP) or type_of(f) in SCALAR_WKT:
                params.append(self.parameter("query", name, message, f))
            elif type_of(f) in self.index.messages and type_of(f) not in (*within[::3], message):
                params += self.query(type_of(f), skip, *within, message, f.name, f.json_name)
        return params

    def body(self, message: str, rule: JSON, bound: list[str]) -> JSON | None:
        if not (body := rule.get("body")):
            return None
        raw = {"content": {"application/octet-stream": {"schema": RAW}}}
        if body == "*":
            if message == HTTP_BODY:
                return raw
            top = [b for b in bound if "." not in b]  # path fields are not in the body
            schema = self.message_schema(message, top) if top else self.type_schema(message)
        else:
            owner, field = self.index.resolve(message, body)
            if type_of(field) == HTTP_BODY:
                return raw
            schema = self.field_schema(owner, field, described=False)
        return {"content": {"application/json": {"schema": schema}}}

    def content(self, message: str, rule: JSON, contract: JSON) -> JSON:
        """The success body: the reply message, or what the contract says a raw body holds."""
        schema: JSON | None = None
        if response_body := rule.get("response_body"):
            owner, field = self.index.resolve(message, response_body)
            if type_of(field) != HTTP_BODY:
                schema = self.field_schema(owner, field, described=False)
        elif message != HTTP_BODY:
            schema = self.type_schema(message)
        if schema is not None:
            return {"application/json": {"schema": schema}}
        raw = contract.get("response_content", {})
        shape = self.type_schema(raw["message"]) if raw.get("message") else RAW
        return {raw.get("media_type", "*/*"): {"schema": shape}}

    def successes(self, message: str, rule: JSON, contract: JSON) -> dict[str, JSON]:
        """Every success status with its body and headers: the first one, then the others
        (e.g. 200 for a replay), which a client must not take for errors."""
        content = self.content(message, rule, contract)
        headers = {
            h["name"]: {"description": h.get("description", ""), "schema": RAW}
            for h in contract.get("response_headers", [])
        }
        first = int(contract.get("success_status") or 200)
        statuses = [(first, PHRASES.get(first, "Success"))]
        statuses += [
            (int(o["status"]), o["description"]) for o in contract.get("other_successes", [])
        ]
        responses: dict[str, JSON] = {}
        for status, description in statuses:
            if str(status) in responses or not 200 <= status < 300:
                raise ValueError(f"success status {status} is repeated or not a 2xx")
            response: JSON = {"description": description, "content": content}
            responses[str(status)] = {**response, "headers": headers} if headers else response
        return responses

    def add(
        self, service: str, method: descriptor_pb2.MethodDescriptorProto, rule: JSON, n: int
    ) -> None:
        verb = next((v for v in VERBS if rule.get(v)), None)
        if verb is None:  # `custom` patterns are not documented
            return
        template, full = rule[verb], f"{service}.{method.name}"
        request, reply = method.input_type.lstrip("."), method.output_type.lstrip(".")
        contract = self.options.get(method.options, "shop.api.v1.http_contract")
        bound = [v.strip() for v in VARIABLE.findall(template)]
        params = [self.parameter("path", v, *self.index.resolve(request, v)) for v in bound]
        for h in contract.get("request_headers", []):
            header = {"name": h["name"], "in": "header", "required": h.get("required", False)}
            params.append({**header, "description": h.get("description", ""), "schema": RAW})
        if rule.get("body") != "*":
            params += self.query(request, {*bound, rule.get("body", "")})
        name = service.rsplit(".", 1)[-1]
        operation: JSON = {
            "operationId": f"{name}_{method.name}" + (f"_{n + 1}" if n else ""),
            "tags": [name],
            "parameters": params,
            "responses": {**self.successes(reply, rule, contract), "default": ERROR_RESPONSE},
        }
        access = self.options.access(method.options)
        # A public method still verifies a token that is sent (its tenant then applies).
        operation["security"] = [{}, BEARER] if access == "public" else [BEARER]
        operation["x-shop-access"] = access
        if doc := self.index.docs.get(full):
            operation.update(summary=summary(doc), description=doc)
        if (body := self.body(request, rule, bound)) is not None:
            operation["requestBody"] = body
        path = VARIABLE.sub(lambda m: "{" + m.group(1).strip() + "}", template)
        if verb in self.paths.setdefault(path, {}):
            raise ValueError(f"{verb.upper()} {path} is bound twice (again by {full})")
        self.paths[path][verb] = operation


def build(
    package: str,
    files: Sequence[descriptor_pb2.FileDescriptorProto],
    index: Index,
    options: Options,
) -> JSON | None:
    """The OpenAPI document of one package's files, or None when none of their methods has
    an HTTP rule."""
    doc, descriptions = Document(index, options), []
    for f in files:
        for svc in f.service:
            service = f"{f.package}.{svc.name}".lstrip(".")
            for method in svc.method:
                if rule := options.get(method.options, "google.api.http"):
                    for n, binding in enumerate([rule, *rule.get("additional_bindings", [])]):
                        doc.add(service, method, binding, n)
            if index.docs.get(service):
                descriptions.append(index.docs[service])
    if not doc.paths:
        return None
    info = {"title": package, "version": package.rsplit(".", 1)[-1]}
    if descriptions:
        info["description"] = "\n\n".join(descriptions)
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [
            {"url": "/", "description": "The edge that serves this document (/openapi/...)."},
            {"url": "http://127.0.0.1:8080", "description": "A local platform (./shop up)."},
        ],
        "paths": doc.paths,
        "components": {"schemas": doc.schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    index, options = Index(request.proto_file), Options(request.proto_file)
    files = {f.name: f for f in request.proto_file}
    packages: dict[str, list[descriptor_pb2.FileDescriptorProto]] = {}
    for name in request.file_to_generate:
        if not name.startswith("google/"):
            packages.setdefault(files[name].package, []).append(files[name])
    try:
        for package, members in sorted(packages.items()):
            if (doc := build(package, members, index, options)) is None:
                continue
            parts = package.split(".")
            area = parts[-2] if len(parts) > 1 else parts[0]
            folder = PurePosixPath(members[0].name).parent
            out = str(folder / f"{area}.openapi.json")
            text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            response.file.add(name=out, content=text)
    except (KeyError, ValueError) as exc:
        response.error = f"protoc_gen_openapi: {exc}"
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
