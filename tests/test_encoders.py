import pytest

from smec.encoders import MODEL_SPECS, model_spec, resolve_model
from smec.errors import SmecError


def test_registry_specs_carry_prompts():
    assert model_spec("multilingual-e5-small-q4").query_prompt == "query: "
    assert model_spec("multilingual-e5-small-q4").document_prompt == "passage: "
    assert model_spec("all-mpnet-base-v2").dim == 768
    assert model_spec("/some/local/folder").query_prompt == ""


def test_unknown_model_is_one_line_error(tmp_path):
    with pytest.raises(SmecError, match="neither a known model"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(SmecError, match="not a sentence-transformers model folder"):
        resolve_model(str(tmp_path))


def test_static_model_rebuilds_and_encodes(tmp_path, monkeypatch):
    pytest.importorskip("model2vec")
    from smec.encoders import encode, load_model
    monkeypatch.setenv("SMEC_MODEL_CACHE", str(tmp_path))
    path = resolve_model("tokenlearn-static-64d")
    assert path.parent == tmp_path and (path / "modules.json").is_file()
    vectors = encode(load_model(path), ["reset my password", "change a forgotten password",
                                        "penguins live in the south"])
    assert vectors.shape == (3, MODEL_SPECS["tokenlearn-static-64d"].dim)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
