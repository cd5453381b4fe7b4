"""The schema's enums are filled from the code's registries ("x-enum-from"), not listed by hand in the JSON:
each equals its registry, a newly registered member becomes valid, and an unknown one is refused naming the key."""
import json
from pathlib import Path

import pytest

import softpick.evaluate as ev
from softpick import schema
from softpick.attention import BACKENDS
from softpick.attention.kinds import REGISTRY as KIND_REGISTRY
from softpick.attention.kinds.base import AttentionKind
from softpick.config import ConfigError, load_config
from softpick.data.sources import SOURCES
from softpick.quantize import METHODS, QuantMethod

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"


def _node(tree: dict, path: str) -> dict:
    for key in path.split("/"):
        tree = tree[key]
    return tree


# (file, node path in that file, node path in the loaded schema, registry, the registry's names now)
DERIVED = [
    ("config.schema.json", "properties/variants/items", "properties/variants/items", "attention.kinds",
     lambda: list(KIND_REGISTRY)),
    ("config.schema.json", "properties/model/properties/attention_backend",
     "properties/model/properties/attention_backend", "attention.backends", lambda: list(BACKENDS)),
    ("quantize.schema.json", "properties/methods/items", "properties/quantize/properties/methods/items",
     "quantize.methods", lambda: list(METHODS)),
    ("quantize.schema.json", "properties/bits_by_method/propertyNames",
     "properties/quantize/properties/bits_by_method/propertyNames", "quantize.methods", lambda: list(METHODS)),
    ("quantize.schema.json", "properties/bits/items", "properties/quantize/properties/bits/items", "quantize.bits",
     lambda: sorted({b for m in METHODS.values() for b in m.bits}, reverse=True)),
    ("quantize.schema.json", "properties/bits_by_method/additionalProperties/items",
     "properties/quantize/properties/bits_by_method/additionalProperties/items", "quantize.bits",
     lambda: sorted({b for m in METHODS.values() for b in m.bits}, reverse=True)),
    ("quantize.schema.json", "properties/tasks/items", "properties/quantize/properties/tasks/items",
     "evaluate.tasks", lambda: list(ev.TASKS)),
    ("eval.schema.json", "properties/tasks/items", "properties/eval/properties/tasks/items", "evaluate.tasks",
     lambda: list(ev.TASKS)),
    ("data.schema.json", "properties/source", "properties/data/properties/source", "data.sources",
     lambda: list(SOURCES)),
]
IDS = [f"{loaded.split('/properties/')[-1].replace('/', '.')}<-{reg}" for _, _, loaded, reg, _ in DERIVED]


@pytest.mark.parametrize("file, raw_path, loaded_path, registry, names", DERIVED, ids=IDS)
def test_enum_is_the_registry(file, raw_path, loaded_path, registry, names):
    raw = _node(json.loads((SCHEMAS / file).read_text()), raw_path)
    assert raw.get("x-enum-from") == registry and "enum" not in raw  # not kept by hand in the JSON
    assert _node(schema.load_schema(), loaded_path)["enum"] == names()


def test_the_shipped_lists():
    """What the registries hold today (a registry that loses a member fails here, not only in a config)."""
    loaded = schema.load_schema()["properties"]
    assert loaded["variants"]["items"]["enum"] == ["softmax", "softpick", "scaled_softpick", "rectified_softmax",
                                                   "relu_softmax", "softmax_plus_one", "gated", "learned_sink"]
    quant = loaded["quantize"]["properties"]
    assert quant["methods"]["items"]["enum"] == ["rtn", "hqq", "bnb", "bnb_fp4", "gptq", "rtn_a8_token",
                                                 "rtn_a8_tensor"]
    assert quant["bits"]["items"]["enum"] == [8, 4, 3, 2]
    assert loaded["eval"]["properties"]["tasks"]["items"]["enum"] == [
        "arc_easy", "arc_challenge", "lambada", "piqa", "hellaswag", "winogrande", "boolq", "openbookqa", "sciq"]


def test_descriptions_come_from_the_registries():
    loaded = schema.load_schema()["properties"]
    variants = loaded["variants"]["items"]["description"]
    assert variants.startswith("one of the kinds registered in softpick.attention.kinds")  # the JSON's own text
    assert all(f"{name}: {kind.formula}" in variants for name, kind in KIND_REGISTRY.items())
    methods = loaded["quantize"]["properties"]["methods"]["items"]["description"]
    assert methods.startswith("one of the methods registered in softpick.quantize.METHODS")
    assert "gptq (8/4/3/2 bits, calibrated): " in methods and "bnb_fp4 (4 bits): bitsandbytes FP4" in methods
    assert all(m.description in methods for m in METHODS.values())
    tasks = loaded["eval"]["properties"]["tasks"]["items"]
    assert tasks["description"].startswith("one of softpick.evaluate.TASKS")  # a registry without descriptions


def test_every_registry_is_named_by_the_schema():
    """No dead entry in the table: each registry fills some node of the shipped schema."""
    used = set()

    def walk(node):
        if isinstance(node, dict):
            if "x-enum-from" in node:
                used.add(node["x-enum-from"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema.load_schema())
    assert used == set(schema.REGISTRIES)


# ----------------------------------------------------------------------------- a new member is picked up
class _FakeKind(AttentionKind):
    name = "fake_kind"
    label = "fake"
    formula = "fake(x)"
    color = "#123456"


def test_a_registered_kind_is_a_valid_variant(monkeypatch):
    with pytest.raises(ConfigError, match=r"config key 'variants\.1': 'fake_kind' is not one of"):
        load_config(overrides=["variants=[softmax, fake_kind]"])
    monkeypatch.setitem(KIND_REGISTRY, "fake_kind", _FakeKind())
    items = schema.load_schema()["properties"]["variants"]["items"]
    assert items["enum"][-1] == "fake_kind" and "fake_kind: fake(x)" in items["description"]
    config = load_config()
    config["variants"] = ["softmax", "fake_kind"]
    schema.raise_schema_errors(schema.load_schema(), config)  # the schema takes it (the model checks KINDS itself)


def test_a_registered_quantizer_and_its_bits_are_valid(monkeypatch):
    fake = QuantMethod("fake_q", (16, 4), {}, lambda *a, **k: iter(()), "a fake quantizer")
    overrides = ["quantize.methods=[rtn, fake_q]", "quantize.bits_by_method={fake_q: [16]}"]
    with pytest.raises(ConfigError) as refused:
        load_config(overrides=overrides)
    assert "config key 'quantize.methods.1': 'fake_q' is not one of" in str(refused.value)
    assert "config key 'quantize.bits_by_method': 'fake_q' is not one of" in str(refused.value)
    assert "config key 'quantize.bits_by_method.fake_q.0': 16 is not one of [8, 4, 3, 2]" in str(refused.value)
    monkeypatch.setitem(METHODS, "fake_q", fake)
    quant = schema.load_schema()["properties"]["quantize"]["properties"]
    assert "fake_q" in quant["methods"]["items"]["enum"] and "fake_q" in quant["bits_by_method"]["propertyNames"]["enum"]
    assert quant["bits"]["items"]["enum"] == [16, 8, 4, 3, 2]
    assert "fake_q (16/4 bits): a fake quantizer" in quant["methods"]["items"]["description"]
    config = load_config(overrides=overrides)
    assert config["quantize"]["methods"] == ["rtn", "fake_q"]


def test_a_registered_task_is_valid(monkeypatch):
    with pytest.raises(ConfigError, match=r"config key 'eval\.tasks\.0': 'fake_task' is not one of \['arc_easy'"):
        load_config(overrides=["eval.tasks=[fake_task]"])
    monkeypatch.setattr(ev, "TASKS", (*ev.TASKS, "fake_task"))
    assert load_config(overrides=["eval.tasks=[fake_task]", "quantize.tasks=[fake_task]"])["eval"]["tasks"] == ["fake_task"]


# ----------------------------------------------------------------------------- refusals name the key and the choices
@pytest.mark.parametrize("override, message", [
    ("variants=[softmax, sparsemax]", "config key 'variants.1': 'sparsemax' is not one of ['softmax', 'softpick', "),
    ("model.attention_backend=flash", "config key 'model.attention_backend': 'flash' is not one of ['auto', 'torch', 'triton']"),
    ("quantize.methods=[awq]", "config key 'quantize.methods.0': 'awq' is not one of ['rtn', 'hqq', 'bnb', "),
    ("quantize.bits=[5]", "config key 'quantize.bits.0': 5 is not one of [8, 4, 3, 2]"),
    ("quantize.bits_by_method={awq: [4]}", "config key 'quantize.bits_by_method': 'awq' is not one of ['rtn', "),
    ("quantize.tasks=[mmlu]", "config key 'quantize.tasks.0': 'mmlu' is not one of ['arc_easy', "),
    ("eval.tasks=[arc_easy, mmlu]", "config key 'eval.tasks.1': 'mmlu' is not one of ['arc_easy', "),
])
def test_unknown_member_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as refused:
        load_config(overrides=[override])
    assert message in str(refused.value)


# ----------------------------------------------------------------------------- the filling itself
def test_a_hand_list_beside_a_registry_is_refused():
    with pytest.raises(ValueError, match="x-enum-from 'attention.kinds' lists an enum of its own"):
        schema._fill_enums({"items": {"x-enum-from": "attention.kinds", "enum": ["softmax"]}})


def test_a_section_fills_only_its_own_registries(monkeypatch):
    """validate_section (the data stage) reads the data sources, not the attention kinds or the quantizers."""
    def unused():
        raise AssertionError("a registry outside the section was read")

    for name in ("attention.kinds", "attention.backends", "quantize.methods", "quantize.bits", "evaluate.tasks"):
        monkeypatch.setitem(schema.REGISTRIES, name, unused)
    assert schema.section_schema("data")["properties"]["source"]["enum"] == list(SOURCES)
    schema.validate_section("data", {"source": "embedded"})
    with pytest.raises(ConfigError, match=r"config key 'data\.source': 'nope' is not one of \['embedded'"):
        schema.validate_section("data", {"source": "nope"})
    with pytest.raises(AssertionError, match="outside the section"):
        schema.load_schema()


def test_the_packaged_schema_is_filled_too():
    """The copy shipped in the package (softpick/_resources/schemas) is the same JSON, filled the same way."""
    packaged = Path(schema.__file__).resolve().parent / "_resources" / "schemas"
    assert (packaged / "config.schema.json").is_file()
    assert schema.load_schema(packaged) == schema.load_schema(SCHEMAS)
    assert schema.load_schema(packaged)["properties"]["variants"]["items"]["enum"] == list(KIND_REGISTRY)
