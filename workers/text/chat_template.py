"""Chat templates rendered under a time limit and an output-size limit.

A checkpoint's chat template is untrusted Jinja. transformers renders it in Jinja's sandbox,
which stops attribute tricks but not a template that loops for hours
(``{% for i in range(99999) %}{% for j in range(99999) %}...``) or renders gigabytes
(``{{ 'x' * 10**10 }}``, a string doubled in a loop). Here the same template, in the same
sandbox with transformers' filters, globals and extensions, is rendered with cooperative limits:

- ``range`` is a generator that checks the deadline at every item; every call the template
  makes and every rendered chunk check it too;
- ``*``, ``**`` and ``+`` refuse results larger than the output limit;
- the output is assembled chunk by chunk and stopped at the output limit.

A template over a limit raises :class:`TemplateLimitError` (the row becomes an error row).
Pure-Python work that makes no call and yields no output between checks (none known in Jinja's
sandbox beyond the above) is not interrupted.
"""
from __future__ import annotations

import operator
import time
from functools import lru_cache

RENDER_TIME_LIMIT_S = 2.0
RENDER_MAX_CHARS = 4 * 1024 * 1024
_SIZED_OPS = {"*": operator.mul, "**": operator.pow, "+": operator.add}


class TemplateLimitError(ValueError):
    """A chat template ran longer, or rendered more, than its limits allow."""


def render(template: str, time_limit_s: float = RENDER_TIME_LIMIT_S, max_chars: int = RENDER_MAX_CHARS,
           **context) -> str:
    """Render chat ``template`` with ``context`` (messages, add_generation_prompt, special tokens)."""
    compiled = _compile(template)
    env = compiled.environment
    env.deadline, env.max_chars = time.monotonic() + time_limit_s, max_chars
    env.time_limit_s = time_limit_s
    try:
        parts, size = [], 0
        for chunk in compiled.generate(**context):
            size += len(chunk)
            if size > max_chars:
                raise TemplateLimitError(f"chat template output exceeds {max_chars} characters")
            env.check_deadline()
            parts.append(chunk)
        return "".join(parts)
    finally:
        env.deadline = None


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from transformers.utils.chat_template_utils import _compile_jinja_template

    base = _compile_jinja_template(template).environment  # transformers' env: filters, globals, extensions

    class LimitedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(_SIZED_OPS)
        deadline: float | None = None
        max_chars: int = RENDER_MAX_CHARS
        time_limit_s: float = RENDER_TIME_LIMIT_S

        def check_deadline(self) -> None:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise TemplateLimitError(f"chat template rendering exceeded its {self.time_limit_s:g} s time limit")

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's signature
            __self.check_deadline()
            return super().call(__context, __obj, *args, **kwargs)

        def call_binop(self, context, operator_name, left, right):
            self.check_deadline()
            _check_size(operator_name, left, right, self.max_chars)
            return _SIZED_OPS[operator_name](left, right)

    env = LimitedEnvironment(trim_blocks=base.trim_blocks, lstrip_blocks=base.lstrip_blocks,
                             extensions=[type(ext) for ext in base.extensions.values()])
    env.filters.update(base.filters)
    env.tests.update(base.tests)
    env.globals.update(base.globals)
    env.globals["range"] = _limited_range(env)
    return env.from_string(template)


def _limited_range(env):
    from jinja2.sandbox import safe_range

    def limited_range(*args):
        for item in safe_range(*args):  # the sandbox's own length cap, plus the deadline
            env.check_deadline()
            yield item
    return limited_range


def _check_size(op: str, left, right, max_chars: int) -> None:
    """Refuse a ``*`` / ``**`` / ``+`` whose result would exceed ``max_chars`` (or its digits)."""
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > max_chars:
                raise TemplateLimitError(f"chat template builds a value of more than {max_chars} items")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right * max(abs(left).bit_length(), 1) > 64 * max_chars:
            raise TemplateLimitError("chat template computes a number too large to render")
    elif isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if len(left) + len(right) > max_chars:
            raise TemplateLimitError(f"chat template builds a value of more than {max_chars} items")
