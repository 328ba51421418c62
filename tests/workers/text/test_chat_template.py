"""Chat templates render like transformers' apply_chat_template, under a time and a size limit."""
import time

import pytest

from workers.text.chat_template import TemplateLimitError
from workers.text.tokenizer import TokenizerBundle

LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
EXPLODES = "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}"
DOUBLES = "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"
HUGE = "{{ 'z' * 10**12 }}"


@pytest.fixture(scope="module")
def bundle():
    from workers.models.tiny import build_tokenizer

    return TokenizerBundle(build_tokenizer(), stop_ids=(0,))


def test_same_ids_as_transformers(bundle):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    expected = bundle.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                    return_dict=False)
    assert bundle.encode_prompt(messages=messages) == list(expected)
    assert bundle.encode_prompt(prompt="hello world") == list(bundle.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello world"}], tokenize=True, add_generation_prompt=True, return_dict=False))


@pytest.mark.parametrize("template,fragment", [(LOOPS, "time limit"), (EXPLODES, "exceeds"),
                                               (DOUBLES, "more than"), (HUGE, "more than")])
def test_hostile_templates_stop_at_a_limit(bundle, template, fragment):
    from workers.models.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = template
    limited = TokenizerBundle(tok, stop_ids=(0,), template_time_limit_s=0.5, template_max_chars=100_000)
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match=fragment):
        limited.encode_prompt(prompt="hello")
    assert time.monotonic() - started < 5


def test_hostile_template_is_an_error_row_not_a_failed_batch(tmp_path):
    import pyarrow as pa

    from pipeline.config import GenerateConfig
    from tests.pipeline.fakes import FakeEngine, make_model_dir
    from workers.actor import GenerateUDF

    class LoopingTemplateEngine(FakeEngine):
        def __init__(self, config):
            super().__init__(config)
            self.tokenizer.tokenizer.chat_template = "{% if messages[0]['content'] == 'sea' %}" + LOOPS + \
                "{% else %}{{ messages[0]['content'] }}{% endif %}"
            self.tokenizer.template_time_limit_s = 0.3

    config = GenerateConfig(input="x", output=str(tmp_path / "out"), target=str(make_model_dir(tmp_path / "m")),
                            max_new_tokens=2)
    out = GenerateUDF(config, LoopingTemplateEngine)(pa.table({"id": [1, 2, 3], "prompt": ["hello", "sea", "world"]}))
    assert out.column("finish_reason").to_pylist() == ["length", "error", "length"]
    assert "time limit" in out.column("error")[1].as_py()
