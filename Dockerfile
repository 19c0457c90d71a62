# nemo_salad on NVIDIA's NGC NeMo container: CUDA, NCCL, Transformer Engine and apex come from the image;
# nemo_salad and its pins are installed with the same script the README uses (scripts/install.sh), in a
# virtual environment that sees the image's packages.
#
#   docker build -t nemo_salad .
#   docker run --gpus all --ipc=host --rm -v /data:/data -v /models:/models nemo_salad \
#     python examples/salad_train.py --config-name=stage1_qwen2.5_3b \
#       data.sources.0.manifest=/data/libriheavy_cuts.jsonl.gz data.sources.1.manifest=/data/emilia_yodas_en.jsonl.gz \
#       data.sources.2.texts=/data/smollm_replay.jsonl data.validation.manifest=/data/dev_cuts.jsonl.gz
FROM nvcr.io/nvidia/nemo:25.09

ENV SALAD_VENV=/opt/salad \
    SALAD_SYSTEM_PACKAGES=1 \
    SALAD_PYTHON=python3 \
    PIP_NO_CACHE_DIR=1

WORKDIR /workspace/nemo_salad
COPY . .
RUN bash scripts/install.sh

ENV PATH=/opt/salad/bin:$PATH
CMD ["python", "examples/salad_train.py", "--help"]
