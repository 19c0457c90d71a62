"""nemo_salad: SALAD speech adaptation of text LLMs (FastConformer → adapter → megatron-core LLM) as a NeMo plugin.

Importing the package (or any subpackage) patches nothing. The CPU support for megatron-core is applied by explicit
calls: :func:`nemo_salad.llm.cpu.ensure_cpu_support` when an LLM or the model-parallel state is built, and
:func:`nemo_salad.llm.cpu.guard_unified_memory_import` by the entry points (``examples/``, the test ``conftest.py``)
before NeMo first imports megatron-core.
"""

__version__ = "0.1.0"
