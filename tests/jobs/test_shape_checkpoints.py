"""jobs.gpu_checks.shape_checkpoints: random checkpoints at a (here tiny) SDAR shape are written
in the published format, load through the product's loaders, and with --agree make SimSD accept
every drafted token."""
import json

from jobs.bench import shapes
from jobs.gpu_checks import shape_checkpoints


def test_agree_weight_pair_loads_and_simsd_accepts_everything(tmp_path, monkeypatch):
    monkeypatch.setitem(shapes.SDAR_SHAPES, "tiny-a", (64, 128, 2, 2, 1))
    monkeypatch.setitem(shapes.SDAR_SHAPES, "tiny-b", (32, 64, 1, 2, 1))
    assert shape_checkpoints.main(["--out", str(tmp_path), "--target", "tiny-a", "--draft", "tiny-b", "--agree",
                                   "--device", "cpu"]) == 0
    cfg = json.loads((tmp_path / "target" / "config.json").read_text())
    assert cfg["model_type"] == "sdar" and cfg["architectures"] == ["SDARForCausalLM"] and "auto_map" in cfg
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (64, 2, 151936)
    assert not list(tmp_path.glob(".tokenizer-*"))

    from workers.api import DecodeConfig, Request
    from workers.engine import Engine

    engine = Engine(str(tmp_path / "target"), str(tmp_path / "draft"),
                    DecodeConfig(decoder="simsd", verify="exact", adaptive="off", batch_size=2, max_new_tokens=8),
                    device="cpu")
    results = engine.generate([Request(id=i, prompt_ids=engine.tokenizer.encode_prompt(p))
                               for i, p in enumerate(["hello", "what is 2+2?"])])
    for r in results:
        assert r.finish_reason == "length" and r.token_ids == [shape_checkpoints.AGREE_TOKEN] * 8, r
        assert r.num_drafted_tokens > 0 and r.num_accepted_tokens == r.num_drafted_tokens, r
