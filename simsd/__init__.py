"""The Python API, with vLLM's and Ray Data LLM's names and shapes.

- ``LLM(target=..., draft=None, decoder=None, **options)``: the engine in this process (GPU or
  CPU, no Ray); ``generate(prompts, sampling_params)`` / ``chat(messages, sampling_params)``
  return ``RequestOutput`` objects. Use it as a context manager to free the GPU on exit.
- ``SamplingParams``: vLLM's field names (workers.api.SamplingParams).
- ``build_processor(config, preprocess=None, postprocess=None)``: the `simsd generate` stage
  (actor pool, continuous batching, per-row errors) for your own ``ray.data.Dataset``.

A facade: the work is done by pipeline/ and workers/. docs/from-vllm.md maps the names.
"""
from pipeline.config import ConfigError, GenerateConfig
from pipeline.processor import Processor, build_processor
from workers.api import SamplingParams

from .llm import LLM
from .outputs import CompletionOutput, RequestOutput, RequestStats

__all__ = ["LLM", "SamplingParams", "build_processor", "Processor", "GenerateConfig", "ConfigError",
           "RequestOutput", "CompletionOutput", "RequestStats"]
