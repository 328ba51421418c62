"""simsd.LLM: vLLM's offline API over the real engine (tiny random checkpoints, CPU, no Ray)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import simsd
from jobs.cli import main
from tests.pipeline.helpers import read_output
from workers.actor import _default_engine_factory

CONVERSATIONS = [
    [{"role": "user", "content": "hello world"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write a haiku about the sea"}],
    [{"role": "user", "content": "what is 12 + 7?"}],
    [{"role": "user", "content": "the quick brown fox"}],
    [{"role": "user", "content": "def add(a, b):"}],
]
MAX_TOKENS = 6


def _engine_options(tiny_models) -> dict:
    return {"target": str(tiny_models["target"]), "draft": str(tiny_models["draft"]), "decoder": "simsd",
            "device": "cpu", "batch_size": 4}


def test_generate_and_chat_outputs(tiny_models):
    closed = []

    def factory(config):
        engine = _default_engine_factory(config)
        close = engine.close
        engine.close = lambda: (closed.append(True), close())
        return engine

    with simsd.LLM(**_engine_options(tiny_models), engine_factory=factory) as llm:
        outs = llm.generate(["hello world", "write a haiku"], simsd.SamplingParams(max_tokens=5))
        assert [o.prompt for o in outs] == ["hello world", "write a haiku"]
        for out in outs:
            expected_ids = llm.tokenizer.apply_chat_template([{"role": "user", "content": out.prompt}],
                                                             tokenize=True, add_generation_prompt=True,
                                                             return_dict=False)
            assert out.prompt_token_ids == list(expected_ids)
            (sample,) = out.outputs
            assert 1 <= len(sample.token_ids) <= 5 and sample.finish_reason in ("stop", "length")
            assert sample.text == llm.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
            assert sample.error is None and sample.logprobs is None
            assert sample.stats.rounds >= 1 and sample.stats.draft_forwards > 0
            assert sample.stats.accepted_tokens <= sample.stats.drafted_tokens

        # One SamplingParams per prompt; fields left at their default follow the LLM's settings.
        short = llm.generate(["hello", "hello"],
                             [simsd.SamplingParams(max_tokens=1), simsd.SamplingParams(max_tokens=2)])
        assert [len(o.outputs[0].token_ids) for o in short] == [1, 2]  # random weights: no early stop

        (chat,) = llm.chat(CONVERSATIONS[1], simsd.SamplingParams(max_tokens=4))
        assert chat.prompt.startswith("<|im_start|>system\nbe brief<|im_end|>") and chat.prompt.endswith("assistant\n")
        assert len(chat.outputs[0].token_ids) <= 4

        # A bad conversation is an error output, as a bad row is in a job.
        (bad,) = llm.chat([[{"role": "user"}]])
        assert bad.outputs[0].finish_reason == "error" and "role" in bad.outputs[0].error
        assert bad.outputs[0].text is None and bad.prompt_token_ids is None

        # vLLM's sampling fields reach the engine: n samples, logprobs, stop token ids.
        (two,) = llm.generate("hello world", simsd.SamplingParams(n=2, max_tokens=4, temperature=0.8, seed=3))
        assert [c.index for c in two.outputs] == [0, 1] and all(c.token_ids for c in two.outputs)
        (scored,) = llm.generate("hello world", simsd.SamplingParams(max_tokens=4, logprobs=1))
        logprobs = scored.outputs[0].logprobs
        assert [e["token_id"] for e in logprobs] == scored.outputs[0].token_ids
        assert all(e["logprob"] <= 0 and len(e["top_token_ids"]) == 1 for e in logprobs)
        greedy = llm.generate("hello world", simsd.SamplingParams(max_tokens=6))[0].outputs[0].token_ids
        (stopped,) = llm.generate("hello world", simsd.SamplingParams(max_tokens=6, stop_token_ids=(greedy[1],)))
        assert stopped.outputs[0].token_ids == greedy[:1] and stopped.outputs[0].finish_reason == "stop"
        # A bad value is refused before any work, naming the field.
        with pytest.raises(ValueError, match="top_p must be in"):
            llm.generate("hello", simsd.SamplingParams(top_p=0.0))
        with pytest.raises(ValueError, match="2 sampling_params for 1 prompts"):
            llm.generate(["hello"], [simsd.SamplingParams(), simsd.SamplingParams()])
        assert llm.generate([]) == []
        with pytest.raises(TypeError, match="chat"):
            llm.generate([[{"role": "user", "content": "hi"}]])
    assert closed, "leaving the with block must close the engine"
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate("hello")


def test_bad_settings_are_config_errors(tiny_models, tmp_path):
    with pytest.raises(simsd.ConfigError, match="unknown setting"):
        simsd.LLM(str(tiny_models["target"]), max_token=3)
    with pytest.raises(simsd.ConfigError, match=r"^target: model path .*missing does not exist"):  # keywords, not flags
        simsd.LLM(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="job setting 'input'"):
        simsd.LLM(str(tiny_models["target"]), input="prompts/")


@pytest.mark.slow
def test_chat_and_build_processor_match_the_cli(ray_local, tmp_path, tiny_models):
    """The same greedy tokens for the same conversations: `simsd generate`, LLM.chat, build_processor.
    Slow (~1-2 min on 2 CPUs): two Ray Data jobs with the real engine."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": list(range(len(CONVERSATIONS))), "messages": CONVERSATIONS}),
                   tmp_path / "in" / "part-0.parquet")
    options = _engine_options(tiny_models)
    argv = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--max-new-tokens", str(MAX_TOKENS)]  # a messages column and no prompt column: chat
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert main(argv) == 0
    cli = {r["id"]: r["generated_token_ids"] for r in read_output(tmp_path / "out").to_pylist()}
    assert len(cli) == len(CONVERSATIONS) and all(cli.values())
    page = (tmp_path / "out" / "report.html").read_text()  # every job ends by writing its report
    assert page.count("data:image/png;base64,") == 4 and 'id="plot-errors"' not in page  # no error rows: no plot

    with simsd.LLM(**options, max_new_tokens=MAX_TOKENS) as llm:
        chat = {i: o.outputs[0].token_ids for i, o in enumerate(llm.chat(CONVERSATIONS))}
    assert chat == cli

    processor = simsd.build_processor({**options, "max_new_tokens": MAX_TOKENS, "workers": 1})
    rows = processor(ray_local.data.read_parquet(str(tmp_path / "in"))).take_all()
    assert {r["id"]: list(r["generated_token_ids"]) for r in rows} == cli
    assert all(r["messages"] for r in rows)  # the input column rides along


def test_a_request_wide_refusal_raises_in_keyword_terms(tiny_models):
    sdar = str(tiny_models["target"])  # an SDAR draft: its reveal order matters for MRS
    sampled = simsd.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.8, seed=1)
    with simsd.LLM(sdar, draft=sdar, device="cpu", batch_size=4, draft_remasking="static") as llm:
        with pytest.raises(ValueError, match=r"draft_remasking='sequential'") as err:
            llm.chat(CONVERSATIONS[:2], sampled)
        assert "--" not in str(err.value)
        greedy = llm.chat(CONVERSATIONS[:1], simsd.SamplingParams(max_tokens=MAX_TOKENS))
        assert greedy[0].outputs[0].error is None
    # Left to right by default: any request may sample, losslessly.
    with simsd.LLM(sdar, draft=sdar, device="cpu", batch_size=4) as llm:
        assert llm.config.draft_remasking == "sequential"
        outputs = llm.chat(CONVERSATIONS[:2], sampled)
        assert all(o.outputs[0].error is None and o.outputs[0].text is not None for o in outputs)


def test_a_row_failure_stays_on_its_output(tiny_models):
    with simsd.LLM(**_engine_options(tiny_models)) as llm:
        outputs = llm.generate(["hello world", ""], simsd.SamplingParams(max_tokens=MAX_TOKENS))
    assert outputs[0].outputs[0].error is None
    bad = outputs[1].outputs[0]
    assert bad.finish_reason == "error" and bad.text is None and "empty" in bad.error


def test_messages_name_keywords():
    from simsd.errors import as_keywords

    assert as_keywords("needs --draft-remasking sequential: a draft") == "needs draft_remasking='sequential': a draft"
    assert as_keywords("--device cuda, but") == "device='cuda', but"
    assert as_keywords("--top-p must be in (0, 1]") == "top_p must be in (0, 1]"
    assert as_keywords("pass --overwrite") == "pass overwrite=True"
    assert as_keywords("--max-new-tokens 5 and --not-a-flag x") == "max_new_tokens=5 and --not-a-flag x"
