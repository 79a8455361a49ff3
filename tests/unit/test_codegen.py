"""gen/ is exactly what `buf generate` (+ `buf build`) writes from proto/ today."""

from __future__ import annotations

import filecmp
from pathlib import Path

from services.launcher import ROOT, codegen


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_gen_matches_the_protos(tmp_path: Path) -> None:
    codegen.generate_into(tmp_path)
    fresh, committed = tmp_path / "gen", ROOT / "gen"
    assert _files(fresh) == _files(committed), "gen/ is stale: run ./shop generate"
    differing = [
        f for f in sorted(_files(fresh)) if not filecmp.cmp(fresh / f, committed / f, shallow=False)
    ]
    assert not differing, f"gen/ differs from proto/ in {differing}: run ./shop generate"


def test_the_descriptor_set_carries_the_rich_error_types() -> None:
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "gen" / codegen.DESCRIPTOR).read_bytes()
    )
    names = {f.name for f in fds.file}
    # Without error_details Envoy silently drops error bodies (EDGE-FACTS).
    assert {"google/rpc/error_details.proto", "shop/order/v1/order.proto"} <= names


def test_the_released_contracts_are_not_broken() -> None:
    assert codegen.breaking_changes() == [], "a released v1 client would break"


def test_the_breaking_check_sees_a_removed_field(tmp_path: Path) -> None:
    from google.protobuf import descriptor_pb2

    # A baseline that released one more v1 product field than proto/ has today.
    image = descriptor_pb2.FileDescriptorSet.FromString(codegen.RELEASED.read_bytes())
    product_file = next(f for f in image.file if f.name == "shop/product/v1/product.proto")
    product = next(m for m in product_file.message_type if m.name == "Product")
    product.field.add(
        name="weight_grams",
        json_name="weightGrams",
        number=99,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    baseline = tmp_path / "released.binpb"
    baseline.write_bytes(image.SerializeToString())
    found = codegen.breaking_changes(baseline)
    assert any("weight_grams" in line or "99" in line for line in found), found
