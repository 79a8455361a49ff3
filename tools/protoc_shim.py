"""A buf local plugin that runs one of protoc's built-in Python generators.

buf cannot reach the Buf Schema Registry here and the Python generators are
compiled into protoc rather than shipped as `protoc-gen-*` binaries, so this
shim takes the CodeGeneratorRequest buf sends, hands the already-parsed files
to grpc_tools' bundled protoc as a descriptor set, and returns what it wrote.

Usage (from buf.gen.yaml): python tools/protoc_shim.py {python|pyi|grpc_python}
Files under google/ are skipped: googleapis-common-protos provides them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc

SKIPPED_PREFIXES = ("google/",)


def main() -> int:
    kind = sys.argv[1]
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    targets = [f for f in request.file_to_generate if not f.startswith(SKIPPED_PREFIXES)]
    if targets:
        with tempfile.TemporaryDirectory() as tmp:
            fds = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
            (Path(tmp) / "in.binpb").write_bytes(fds.SerializeToString())
            out = Path(tmp) / "out"
            out.mkdir()
            code = protoc.main(
                ["protoc", f"--descriptor_set_in={tmp}/in.binpb", f"--{kind}_out={out}", *targets]
            )
            if code != 0:
                response.error = f"protoc --{kind}_out failed with exit code {code}"
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
