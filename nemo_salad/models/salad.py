"""SaladModel: speech encoder (FastConformer, Whisper, Mimi) → adapter → megatron-core LLM, frozen text teacher.

The student reads speech spliced between text embeddings; the teacher (the original LLM) reads the all-text
transcript under ``no_grad``. Two teacher modes (``model.teacher.mode``):

* ``copy`` — a separate frozen copy of the original LLM (full fine-tuning of the student, as in the paper);
* ``shared`` — the student's own weights with LoRA switched off, or the frozen student LLM itself: no second
  copy in memory. Only valid when the student LLM is frozen or trained through LoRA.

Legend: ``B`` samples, ``C`` speech clips, ``N`` audio samples, ``T`` positions, ``H`` LLM width.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Trainer
from nemo.core.classes import ModelPT
from nemo.utils import logging
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from nemo_salad.data.skips import HeldOutCount
from nemo_salad.llm import LLMConfig, MegatronLLM
from nemo_salad.llm.parallel import data_parallel_group
from nemo_salad.losses import DistillationLoss, LossOutput
from nemo_salad.metrics import GapStats, gap_stats
from nemo_salad.models.network import SaladNetwork, unwrap_network
from nemo_salad.modules.lora import apply_lora, lora_disabled
from nemo_salad.modules.splice import Segment, SplicedBatch, splice
from nemo_salad.parts import pretrained as P
from nemo_salad.parts.audio_checks import BadSampleError, audio_problem, load_cut_audio, to_mono_tensor
from nemo_salad.parts.safe_config import check_targets, safe_instantiate

__all__ = ["SaladModel", "copy_runtime_settings", "uses_megatron_strategy"]

#: TransformerConfig fields that NeMo's MegatronStrategy / mixed-precision plugin set on a model's config.
_RUNTIME_FIELDS = ("fp16", "bf16", "params_dtype", "pipeline_dtype", "autocast_dtype", "timers", "grad_scale_func",
                   "no_sync_func", "grad_sync_func", "param_sync_func", "finalize_model_grads_func")


def uses_megatron_strategy(trainer: Trainer | None) -> bool:
    """True when ``trainer`` trains with NeMo-2's ``MegatronStrategy`` (then the model is built in
    ``configure_model``, after megatron's parallel groups exist)."""
    if trainer is None:
        return False
    from nemo.lightning.pytorch.strategies import MegatronStrategy

    return isinstance(trainer.strategy, MegatronStrategy)


def copy_runtime_settings(source: Any, target: Any) -> None:
    """Copy the precision and schedule hooks that NeMo/megatron set on a config (``_RUNTIME_FIELDS``)."""
    for name in _RUNTIME_FIELDS:
        if hasattr(source, name) and hasattr(target, name):
            setattr(target, name, getattr(source, name))

_TEACHER_MODES = ("copy", "shared", "none")


class ClipFeatureCache:
    """Encoder features of whole clips, for a frozen encoder whose output for a clip does not depend on the other
    clips of its batch (``clip_independent``, e.g. Whisper): :meth:`SaladModel.encode_cuts` (evaluation, the run
    report) then encodes every clip once per process, however many times it is scored. Training is not cached: its
    speech spans are cut anew from each utterance every epoch. Least recently used clips are dropped beyond
    ``max_bytes``.

    >>> cache = ClipFeatureCache(max_bytes=48); cache.put("a", torch.zeros(2, 4)); cache.put("b", torch.ones(2, 4))
    >>> "a" in cache, "b" in cache, cache.get("b").shape  # 32 bytes each: "a" was dropped for "b"
    (False, True, torch.Size([2, 4]))
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes, self.nbytes = int(max_bytes), 0
        self._items: OrderedDict[Any, Tensor] = OrderedDict()

    @staticmethod
    def key(cut: Any) -> tuple[Any, ...]:
        """What identifies a clip's audio: its id, recording (id and file paths), channel, span and rate."""
        rec = getattr(cut, "recording", None)
        sources = tuple(str(src.source) for src in getattr(rec, "sources", ()) if isinstance(src.source, str))
        return (cut.id, getattr(cut, "recording_id", None), sources, getattr(cut, "channel", None),
                round(float(cut.start), 6), round(float(cut.duration), 6), cut.sampling_rate)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def get(self, key: Any) -> Tensor:
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Any, feats: Tensor) -> None:
        feats = feats.detach().to("cpu", copy=True)
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        self._items[key] = feats
        self.nbytes += feats.numel() * feats.element_size()
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()


class SaladModel(ModelPT):
    """The speech-adapted LLM and its text teacher, as a NeMo model (``.nemo`` save/restore, Lightning).

    Args:
        cfg (DictConfig): the ``model`` section (see ``conf/model/``): ``llm``, ``tokenizer``, ``encoder``,
            ``adapter`` (a ``_target_`` under the allowlist), ``teacher.mode``, ``splice.pad_side``.
        trainer (Trainer | None): Lightning trainer.

    Batches (from :mod:`nemo_salad.data`) are dicts with ``audio (C, N)``, ``audio_lens (C,)``,
    ``segments`` (per sample, a list of :class:`~nemo_salad.modules.splice.Segment`) and ``sample_ids``.
    """

    def __init__(self, cfg: DictConfig | dict, trainer: Trainer | None = None, defer_build: bool | None = None
                 ) -> None:
        cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
        check_targets(cfg, source="SaladModel config")
        super().__init__(cfg=cfg, trainer=trainer)
        from nemo_salad.parts.nemo_io import SafeSaveRestoreConnector

        self._save_restore_connector = SafeSaveRestoreConnector()  # also saves a tensor-parallel model
        self._load_pretrained = not self._is_model_being_restored()
        self.teacher_mode = str(cfg.get("teacher", {}).get("mode", "copy"))
        if self.teacher_mode not in _TEACHER_MODES:
            raise ValueError(f"model.teacher.mode={self.teacher_mode!r}; expected one of {_TEACHER_MODES}")
        self._built = False
        self._pending_config: Any = None  # megatron settings NeMo's MegatronStrategy sets before the build
        self._init_from: str | None = None
        self.tokenizer = self._setup_tokenizer(cfg)
        if defer_build is None:
            defer_build = uses_megatron_strategy(trainer)
        if not defer_build:
            self.configure_model()
        self.pad_side = str(cfg.get("splice", {}).get("pad_side", "right"))
        self.on_bad_sample = str(cfg.get("on_bad_sample", "error"))
        if self.on_bad_sample not in ("error", "skip"):
            raise ValueError(f"model.on_bad_sample={self.on_bad_sample!r}; expected 'error' or 'skip'")
        self.skipped: Counter[str] = Counter()  # reason -> count, for on_bad_sample=skip
        self.data_skipped = 0  # samples the data pipeline dropped (reasons are logged where they happen)
        self.data_proportional = 0  # speech samples laid out with proportional word times (no alignment)
        self._min_samples: int | None = None
        self._clip_features = ClipFeatureCache()  # frozen clip-independent encoders: encode_cuts reuses features
        loss_cfg = dict(cfg.get("loss") or {})
        self.loss = DistillationLoss(alpha=float(loss_cfg.get("alpha", 1.0)),
                                     direction=loss_cfg.get("direction", "forward"),
                                     temperature=float(loss_cfg.get("temperature", 1.0)),
                                     chunk_size=int(loss_cfg.get("chunk_size", 1024)))
        if self.loss.alpha > 0 and self.teacher_mode == "none":
            raise ValueError("model.loss.alpha > 0 (distillation) needs a teacher: set model.teacher.mode to copy or "
                             "shared, or alpha to 0")
        self._val_gap = GapStats()
        self._val_items = HeldOutCount("validation data")

    # ------------------------------------------------------------------ construction
    def configure_model(self, vp_stage: int | None = None) -> None:
        """Build encoder, adapter, student and teacher (once; later calls do nothing).

        Called from ``__init__``, except under NeMo-2's ``MegatronStrategy`` (or with ``defer_build=True``): there
        Lightning calls it after the strategy has created megatron's parallel groups, so every megatron layer —
        student, teacher and adapter alike — is built for this rank's tensor-parallel shard, and pretrained weights
        are split as they load.

        Raises:
            ValueError: for pipeline parallelism (``pipeline_model_parallel_size > 1``), which SaladModel does not
                support: its encoder, splice and fused loss run around a whole LLM.
        """
        if self._built:
            return
        from megatron.core import parallel_state

        ps = parallel_state
        if ps.model_parallel_is_initialized() and ps.get_pipeline_model_parallel_world_size() > 1:
            raise ValueError("SaladModel does not support pipeline parallelism (pipeline_model_parallel_size > 1): "
                             "use tensor and data parallelism (megatron.tensor_model_parallel_size, more GPUs)")
        cfg, load = self._cfg, self._load_pretrained
        llm = P.build_llm(cfg.llm, load_weights=load)
        encoder = P.build_speech_encoder(cfg.encoder, load_weights=load)
        adapter = safe_instantiate(cfg.adapter, source="model.adapter", in_dim=encoder.output_dim,
                                   out_dim=llm.hidden_size)
        with open_dict(self._cfg):  # what a .nemo stores: architectures written out, no checkpoint paths
            self._cfg.llm = P.resolved_llm_config(cfg.llm, llm)
            self._cfg.encoder = P.resolved_encoder_config(cfg.encoder, encoder)
        self.module = SaladNetwork(llm, encoder, adapter, self._build_teacher(llm))
        self._setup_training_mode(cfg)
        self._built = True
        if self._pending_config is not None:
            self.config = self._pending_config
        if self._init_from:
            self._load_init_weights()

    @property
    def init_from(self) -> str | None:
        """Weights (``.ckpt``, ``.nemo`` or a distributed-checkpoint directory) loaded right after the build — at
        once if the model is built, else at the end of :meth:`configure_model` (before any optimizer exists)."""
        return self._init_from

    @init_from.setter
    def init_from(self, path: str | None) -> None:
        self._init_from = path
        if path and self._built:
            self._load_init_weights()

    # ------------------------------------------------------------------ the parts (through megatron's wrappers)
    @property
    def network(self) -> SaladNetwork:
        """The trained parts: ``self.module``, unwrapped from megatron's ``DistributedDataParallel`` and
        ``Float16Module`` when ``MegatronStrategy`` has wrapped it.

        Raises:
            AttributeError: before :meth:`configure_model` has built the model.
        """
        module = self._modules.get("module")
        if module is None:
            raise AttributeError("SaladModel is not built yet (configure_model builds it)")
        return unwrap_network(module)

    @property
    def llm(self) -> MegatronLLM:
        """The student LLM."""
        return self.network.llm

    @property
    def encoder(self) -> torch.nn.Module:
        """The speech encoder."""
        return self.network.encoder

    @property
    def adapter(self) -> torch.nn.Module:
        """The modality adapter."""
        return self.network.adapter

    @property
    def teacher(self) -> MegatronLLM | None:
        """The separate frozen teacher (``teacher.mode=copy``); None in the other modes or before the build."""
        return self.network.teacher if self._built else None

    def _load_init_weights(self) -> None:
        from nemo_salad.models.init_weights import load_weights

        load_weights(self, str(self._init_from))

    # ------------------------------------------------------------------ construction helpers
    def _setup_tokenizer(self, cfg: DictConfig):
        tok = cfg.get("tokenizer") or {}
        files = dict(tok.get("files") or {})
        if not files:
            directory = tok.get("dir") or P.llm_source_dir(cfg.llm.get("pretrained"))
            if directory is None:
                raise ValueError("model.tokenizer.dir must be set when model.llm.pretrained is null")
            files = P.tokenizer_files(directory, "model.tokenizer.dir" if tok.get("dir") else "model.llm.pretrained")
            with open_dict(self._cfg):
                self._cfg.tokenizer = {"dir": None, "files": files}
        registered = {k: self.register_artifact(f"tokenizer.files.{k}", v) for k, v in files.items()}
        return P.load_tokenizer(P.gather_tokenizer_files(registered))

    def _build_teacher(self, llm: MegatronLLM) -> MegatronLLM | None:
        """A frozen copy of the original LLM for ``teacher.mode=copy`` (before LoRA is applied), else None."""
        if self.teacher_mode != "copy":
            return None
        teacher = MegatronLLM(LLMConfig.from_dict(self._cfg.llm.arch), attention=self._cfg.llm.get("attention", "sdpa"))
        teacher.load_state_dict(llm.state_dict())
        return teacher.requires_grad_(False).eval()

    def _setup_training_mode(self, cfg: DictConfig) -> None:
        llm_cfg = cfg.llm
        lora = llm_cfg.get("lora")
        if lora:
            apply_lora(self.llm, rank=int(lora.get("rank", 16)), alpha=float(lora.get("alpha", 32)),
                       targets=tuple(lora.get("targets", ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"))),
                       dropout=float(lora.get("dropout", 0.0)))
        elif llm_cfg.get("freeze", False):
            self.llm.requires_grad_(False)
        if self.teacher_mode == "shared" and not lora and not llm_cfg.get("freeze", False):
            raise ValueError("model.teacher.mode=shared needs a frozen student LLM (model.llm.freeze=true) or LoRA "
                             "(model.llm.lora); with full fine-tuning use mode=copy")

    def train(self, mode: bool = True) -> SaladModel:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # ------------------------------------------------------------------ NeMo ModelPT hooks
    def setup_training_data(self, train_data_config: Any) -> None:
        """Data comes from :class:`nemo_salad.data.SaladDataModule`, not from the model config."""

    def setup_validation_data(self, val_data_config: Any) -> None:
        """Data comes from :class:`nemo_salad.data.SaladDataModule`, not from the model config."""

    @classmethod
    def list_available_models(cls) -> list:
        return []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep Lightning checkpoints loadable with ``torch.load(weights_only=True)``: plain containers only."""
        hparams = checkpoint.get("hyper_parameters")
        if hparams is not None:
            checkpoint["hyper_parameters"] = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig)
                                              else v for k, v in dict(hparams).items()}
        checkpoint.pop("hparams_type", None)

    @classmethod
    def restore_from(cls, restore_path: str, *args: Any, save_restore_connector: Any = None, **kwargs: Any):
        """``ModelPT.restore_from`` that refuses config targets outside the allowlist (weights_only loading)."""
        from nemo_salad.parts.nemo_io import SafeSaveRestoreConnector

        return super().restore_from(restore_path, *args, save_restore_connector=save_restore_connector
                                    or SafeSaveRestoreConnector(), **kwargs)

    # ------------------------------------------------------------------ speech path
    @property
    def min_audio_samples(self) -> int:
        """Fewest audio samples that give one encoder frame (before a deferred build: from a throwaway copy of the
        encoder, which needs no parallel state)."""
        if self._min_samples is None:
            if self._built:
                encoder = self.encoder
            else:
                enc_cfg = self._cfg.encoder
                encoder = P.build_speech_encoder(enc_cfg, load_weights=bool(enc_cfg.get("pretrained")))
            self._min_samples = encoder.min_samples()
        return self._min_samples

    def perceive(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder + adapter: ``(C, N), (C,) → (C, F, H), (C,)`` speech embeddings in the LLM input space."""
        feats, lens = self.encoder(audio, audio_lens)
        return self.adapter(feats, lens)

    @staticmethod
    def _has_speech(batch: dict[str, Any]) -> bool:
        """True when the batch carries audio clips (a text-replay batch has none)."""
        return batch.get("audio") is not None and bool(batch["audio"].numel())

    def splice_batch(self, batch: dict[str, Any], speech: tuple[Tensor, Tensor] | None = None
                     ) -> SplicedBatch | None:
        """Student embeddings and teacher ids for a batch; ``speech`` overrides :meth:`perceive` (test hook).

        With ``on_bad_sample=skip`` an unusable sample (no frames, empty transcript, longer than the LLM
        context) is dropped, counted in :attr:`skipped` and logged; None is returned if none is left.

        Raises:
            BadSampleError: with ``on_bad_sample=error``, naming the sample.
        """
        if speech is None and self._has_speech(batch):
            speech = self.perceive(batch["audio"], batch["audio_lens"])
        frames, lens = speech if speech is not None else (None, None)
        segments = list(batch["segments"])
        names = list(batch.get("sample_ids") or [str(i) for i in range(len(segments))])
        while segments:
            try:
                return splice(segments, frames, lens, self.llm.embed, pad_id=self.pad_id, pad_side=self.pad_side,
                              sample_ids=names, max_len=self.llm.cfg.max_position_embeddings)
            except BadSampleError as err:
                if self.on_bad_sample != "skip":
                    raise
                i = names.index(err.sample_id)
                del segments[i], names[i]
                self.skipped[err.reason] += 1
                logging.warning(f"skipping {err} ({sum(self.skipped.values())} skipped so far)")
        return None

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    def student_hidden(self, sb: SplicedBatch) -> Tensor:
        """Student final hidden states ``(B, Ts, H)`` on the interleaved input."""
        return self.llm.hidden_states(inputs_embeds=sb.inputs_embeds, padding_mask=sb.student_mask)

    def student_text_hidden(self, sb: SplicedBatch) -> Tensor:
        """Student final hidden states ``(B, Tt, H)`` on the all-text sequence (forgetting, misalignment)."""
        return self.llm.hidden_states(input_ids=sb.teacher_ids, padding_mask=sb.teacher_mask)

    @torch.no_grad()
    def teacher_hidden(self, sb: SplicedBatch) -> Tensor:
        """Teacher final hidden states ``(B, Tt, H)`` on the all-text sequence, without gradients."""
        if self.teacher_mode == "none":
            raise RuntimeError("model.teacher.mode=none: this model has no teacher")
        if self.teacher is not None:
            return self.teacher.hidden_states(input_ids=sb.teacher_ids, padding_mask=sb.teacher_mask)
        with lora_disabled(self.llm):
            return self.llm.hidden_states(input_ids=sb.teacher_ids, padding_mask=sb.teacher_mask)

    def teacher_logits(self, hidden: Tensor) -> Tensor:
        """Project teacher hidden states to logits (the teacher's own output layer)."""
        if self.teacher is not None:
            return self.teacher.logits(hidden)
        with lora_disabled(self.llm):
            return self.llm.logits(hidden)

    @property
    def teacher_output_weight(self) -> Tensor:
        """The teacher's ``(V, H)`` output projection (the student's own, detached, in shared mode)."""
        return self.teacher.output_weight if self.teacher is not None else self.llm.output_weight.detach()

    def forward(self, batch: dict[str, Any], teacher: bool = True) -> dict[str, Any]:
        """Splice, then run student (with grad) and, if ``teacher``, the teacher (without) once: the inputs that
        the loss and the gap metrics share (``spliced``, ``student_hidden``, ``teacher_hidden``)."""
        sb = self.splice_batch(batch)
        if sb is None:  # every sample skipped
            return {"spliced": None}
        out: dict[str, Any] = {"spliced": sb, "student_hidden": self.student_hidden(sb)}
        if teacher and self.teacher_mode != "none":
            out["teacher_hidden"] = self.teacher_hidden(sb)
        return out

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: dict[str, Any], outputs: dict[str, Any] | None = None) -> LossOutput | None:
        """α·KD + (1−α)·NLL at every student position whose next token is text; None if nothing to learn.

        ``outputs`` (from :meth:`forward`) reuses forward passes already run on this batch."""
        outputs = outputs if outputs is not None else self.forward(batch, teacher=self.loss.alpha > 0)
        sb = outputs["spliced"]
        if sb is None or sb.num_targets == 0:
            return None
        student = outputs["student_hidden"].flatten(0, 1)[sb.student_pos]  # (N, H)
        teacher = t_weight = None
        if self.loss.alpha > 0:
            teacher = outputs["teacher_hidden"].flatten(0, 1)[sb.teacher_pos]
            t_weight = self.teacher_output_weight
        return self.loss(student, self.llm.output_weight, teacher, t_weight, sb.targets, tp_group=self.llm.tp_group)

    def _count_data_skips(self, batch: dict[str, Any]) -> None:
        """Count the batch's skipped items; the datamodule's monitor stops the run when a source is unusable."""
        self.data_skipped += len(batch.get("skipped") or [])
        self.data_proportional += len(batch.get("proportional") or [])
        monitor = getattr(getattr(self._trainer, "datamodule", None), "skip_monitor", None)
        if monitor is not None:
            monitor.update(batch.get("source"), len(batch["segments"]), batch.get("skipped") or [])

    def training_step(self, batch: dict[str, Any], batch_idx: int | None = None) -> Tensor | None:
        """The training loss. ``batch_idx`` is None when megatron's schedule calls it (``MegatronStrategy``),
        which needs a tensor even for a batch with nothing to learn (then a zero connected to the graph)."""
        self._count_data_skips(batch)
        out = self.compute_loss(batch)
        n = len(batch["segments"])
        self.log("train/skipped", float(self.data_skipped + sum(self.skipped.values())), batch_size=max(n, 1))
        self.log("train/proportional_cuts", float(self.data_proportional), batch_size=max(n, 1))
        if out is None:
            return None if batch_idx is not None else self._zero_touching(self.network)
        self.log_dict({"train/loss": out.loss.detach(), "train/kd": out.kd, "train/nll": out.nll,
                       "train/tokens": float(out.num_tokens)}, prog_bar=False, batch_size=n)
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False, batch_size=n)
        if batch_idx is None and not self._has_speech(batch):
            # text replay: the speech path gets exact-zero gradients rather than none (megatron's overlapped
            # gradient reduction waits for a gradient of every parameter of a bucket)
            return out.loss + self._zero_touching(self.encoder, self.adapter)
        return out.loss

    @staticmethod
    def _zero_touching(*modules: torch.nn.Module) -> Tensor:
        """0 · Σ of every trainable parameter of ``modules``: adds nothing to a loss, gives each a zero gradient.

        Under ``MegatronStrategy`` (``batch_idx`` None) a step's loss must reach every trainable parameter:
        megatron's DDP reduces gradients bucket by bucket as they become ready, and its distributed optimizer updates
        every parameter anyway (an absent gradient counts as zero there)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return sum((p.float().sum() * 0.0 for p in params), torch.zeros((), device=params[0].device if params
                                                                                else None))

    def validation_step(self, batch: dict[str, Any], batch_idx: int | None = None) -> Tensor | None:
        self._val_items.add(batch)
        outputs = self(batch)  # shared by the loss and the gap metrics
        out = self.compute_loss(batch, outputs)
        if out is not None:
            n = len(batch["segments"])
            self.log_dict({"val/loss": out.loss, "val/kd": out.kd, "val/nll": out.nll}, batch_size=n, sync_dist=True)
        self._val_gap += gap_stats(self, batch, outputs=outputs)
        return out.loss if out is not None else self.llm.output_weight.sum() * 0.0

    # ------------------------------------------------------------------ NeMo-2 Megatron contract
    @property
    def config(self) -> Any:
        """megatron-core reads schedule settings (precision, overlap hooks, ...) from the module's ``config``: the
        student's ``TransformerConfig`` once built; before that a ``ModelParallelConfig`` collecting what NeMo's
        ``MegatronStrategy`` sets (precision, timers), applied to every megatron block at build time."""
        if self._built:
            return self.llm.gpt.config
        if self._pending_config is None:
            from megatron.core import ModelParallelConfig

            self._pending_config = ModelParallelConfig()
        return self._pending_config

    @config.setter
    def config(self, value: Any) -> None:
        if not self._built:
            self._pending_config = value
            return
        for module in self.megatron_configs():
            copy_runtime_settings(value, module)

    def on_fit_start(self) -> None:
        """NeMo's mixed-precision plugin sets ``fp16``/``bf16`` on ``model.module``'s config (the student's) when it
        wraps the network in ``Float16Module``: give the teacher's and adapter's megatron blocks the same settings."""
        if self._built:
            self.config = self.llm.gpt.config

    def megatron_configs(self) -> list[Any]:
        """The ``TransformerConfig`` of every megatron block (student, teacher, adapter layers), student first."""
        from megatron.core.transformer import TransformerConfig

        seen: dict[int, Any] = {}  # self comes first in modules(), and its config is the student's
        for module in self.modules():
            cfg = getattr(module, "config", None)
            if isinstance(cfg, TransformerConfig):
                seen.setdefault(id(cfg), cfg)
        return list(seen.values())

    @property
    def model_type(self) -> Any:
        """megatron-core's model type (a decoder-only GPT)."""
        from megatron.core.enums import ModelType

        return ModelType.encoder_or_decoder

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None
                           ) -> dict[str, Any]:
        """Megatron distributed-checkpoint view of every weight (student, teacher, encoder, adapter, LoRA), used by
        ``MegatronStrategy`` checkpoints and :mod:`nemo_salad.models.dist_checkpoint`."""
        from nemo_salad.models.dist_checkpoint import sharded_state_dict

        # the keys of state_dict(): megatron's DistributedDataParallel / Float16Module add no prefix there
        return sharded_state_dict(self, prefix, sharded_offsets, metadata, replace={"module": self.network})

    def data_step(self, dataloader_iter: Any) -> dict[str, Any]:
        from nemo_salad.models.megatron_contract import megatron_data_step

        return megatron_data_step(dataloader_iter, self.device)

    def training_loss_reduction(self) -> Any:
        from nemo_salad.models.megatron_contract import SaladLossReduction

        return SaladLossReduction()

    def validation_loss_reduction(self) -> Any:
        from nemo_salad.models.megatron_contract import SaladLossReduction

        return SaladLossReduction(validation=True)

    def on_validation_epoch_end(self) -> None:
        stats, self._val_gap = self._val_gap.all_reduce(data_parallel_group()), GapStats()
        items, self._val_items = self._val_items, HeldOutCount("validation data")
        complete = self._trainer is None or not self._trainer.sanity_checking  # raise if a whole pass was skipped
        self.log("val/skipped", float(items.finish(data_parallel_group(), refuse_unusable=complete)))
        if stats.misalignment_tokens or stats.forgetting_tokens:
            self.log_dict({"val/misalignment": stats.misalignment, "val/forgetting": stats.forgetting},
                          prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        from nemo_salad.parts.optim import build_optimizer

        optim = OmegaConf.to_container(self.cfg.optim, resolve=True) if self.cfg.get("optim") else {}
        return build_optimizer(self, optim, self.trainer.max_steps if self.trainer is not None else -1)

    # ------------------------------------------------------------------ audio in, embeddings / text out
    def _audio_batch(self, audios: Sequence[Any], sample_rates: Sequence[int], ids: Sequence[str]
                     ) -> tuple[Tensor, Tensor]:
        rows = []
        for audio, sr, name in zip(audios, sample_rates, ids):
            problem = audio_problem(audio, sr, self.encoder.sample_rate, self.min_audio_samples)
            if problem:
                raise BadSampleError(name, problem)
            rows.append(to_mono_tensor(audio))
        lens = torch.tensor([len(r) for r in rows])
        padded = torch.zeros(len(rows), int(lens.max()))
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        return padded.to(self.device), lens.to(self.device)

    @torch.no_grad()
    def encode_cuts(self, cuts: Sequence[Any]) -> list[Tensor]:
        """Speech embeddings ``(F_i, H)`` of lhotse cuts (16 kHz mono), in the LLM's input-embedding space.

        Raises:
            BadSampleError: for audio that cannot be read or encoded, naming the cut (and its file).
        """
        encoder = self.encoder
        if not (getattr(encoder, "frozen", False) and getattr(encoder, "clip_independent", False)):
            audio, lens = self._audio_batch([load_cut_audio(c) for c in cuts], [c.sampling_rate for c in cuts],
                                            [c.id for c in cuts])
            frames, flens = self.perceive(audio, lens)
            return [frames[i, : int(n)] for i, n in enumerate(flens)]
        keys = [ClipFeatureCache.key(c) for c in cuts]
        found = {k: self._clip_features.get(k) for k in keys if k in self._clip_features}  # read before any put
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            audio, lens = self._audio_batch([load_cut_audio(cuts[i]) for i in missing],
                                            [cuts[i].sampling_rate for i in missing], [cuts[i].id for i in missing])
            feats, flens = encoder(audio, lens)
            for row, i in enumerate(missing):
                found[keys[i]] = feats[row, : int(flens[row])]
                self._clip_features.put(keys[i], found[keys[i]])
        rows = [found[k].to(self.device) for k in keys]
        flens = torch.tensor([len(r) for r in rows], device=self.device)
        feats = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (C, F, D), zero past each clip
        frames, flens = self.adapter(feats, flens)
        return [frames[i, : int(n)] for i, n in enumerate(flens)]

    @torch.no_grad()
    def generate(self, audios: Sequence[Any], sample_rate: int = 16000, prompt: str = "", prefix: str = "",
                 max_new_tokens: int = 32, ids: Sequence[str] | None = None) -> list[str]:
        """Greedy decoding from speech: ``[prefix text, speech, prompt text] → continuation``.

        Args:
            audios: waveforms ``(N,)`` at ``sample_rate``.
            prompt (str): text after the speech (e.g. a question). prefix (str): text before it.
            max_new_tokens (int): generation length. Default: 32.

        Raises:
            BadSampleError: for unusable audio, naming the sample.
        """
        names = list(ids) if ids is not None else [f"audio[{i}]" for i in range(len(audios))]
        audio, lens = self._audio_batch(audios, [sample_rate] * len(audios), names)
        frames, flens = self.perceive(audio, lens)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False).input_ids if text else []  # noqa: E731
        samples = [[Segment("text", encode(prefix)), Segment("speech", [self.pad_id], clip=i),
                    Segment("text", encode(prompt))] for i in range(len(audios))]
        samples = [[s for s in sample if s.kind == "speech" or s.ids] for sample in samples]
        sb = splice(samples, frames, flens, self.llm.embed, self.pad_id, pad_side="left", sample_ids=names)
        embeds, mask = sb.inputs_embeds, sb.student_mask
        out = torch.zeros(len(audios), 0, dtype=torch.long, device=embeds.device)
        for _ in range(max_new_tokens):
            nxt = self.llm(inputs_embeds=embeds, padding_mask=mask)[:, -1].argmax(-1)  # (B,)
            out = torch.cat([out, nxt[:, None]], dim=1)
            embeds = torch.cat([embeds, self.llm.embed(nxt[:, None])], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        eos = self.tokenizer.eos_token_id
        texts = []
        for row in out.tolist():
            texts.append(self.tokenizer.decode(row[: row.index(eos)] if eos in row else row))
        return texts
