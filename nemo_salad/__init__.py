"""nemo_salad: SALAD speech adaptation of text LLMs (FastConformer → adapter → megatron-core LLM) as a NeMo plugin."""

from nemo_salad.llm.cpu import guard_unified_memory_import

guard_unified_memory_import()

__version__ = "0.1.0"
