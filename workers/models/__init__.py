from .config import ModelConfig, ModelLoadError, load_config, parse_config
from .kv_cache import KVCache
from .loader import load_model
from .qwen3 import ForwardBatch, Qwen3Model

__all__ = ["ModelConfig", "ModelLoadError", "load_config", "parse_config", "KVCache", "load_model",
           "ForwardBatch", "Qwen3Model"]
