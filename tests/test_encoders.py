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


DOCS = ["reset my password", "The quick brown fox jumps over the lazy dog. " * 30,
        "penguins", "", "a b c d e f g h i j k l m n o p", "Ünïcödé text — with dashes",
        " ".join(f"word{i} of a long document" for i in range(200))]   # > 512 tokens


@pytest.mark.parametrize("name, max_seq_length", [("all-MiniLM-L6-v2", None),
                                                  ("all-MiniLM-L6-v2", 32),
                                                  ("tokenlearn-static-64d", None)])
def test_pretokenised_token_budget_vectors_equal_encode(name, max_seq_length):
    if name.startswith("tokenlearn"):
        pytest.importorskip("model2vec")
    import numpy as np

    from smec.encoders import encode, load_model
    from smec.tokens import TextTokenizer, encode_tokens, tokenizer_spec
    path = resolve_model(name)
    model = load_model(path, max_seq_length=max_seq_length)
    spec = tokenizer_spec(path, max_seq_length)
    assert spec is not None
    want = encode(model, DOCS, "query: ", batch_size=4)
    flat, lengths = TextTokenizer(spec)(DOCS, "query: ")
    if max_seq_length:
        assert lengths.max() == max_seq_length
    for budget in (64, 2):       # several batches (runs, for a static model) per call
        got = encode_tokens(model, spec, flat, lengths, batch_tokens=budget)
        np.testing.assert_allclose(got, want, atol=2e-6)


def test_token_batches_keep_the_budget_and_cover_every_text():
    import numpy as np

    from smec.tokens import token_batches
    lengths = np.array([5, 300, 17, 17, 1, 64, 0, 9], np.int32)
    batches = token_batches(lengths, 64)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 64
