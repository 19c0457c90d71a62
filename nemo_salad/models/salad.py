"""SaladModel: speech encoder (FastConformer, Whisper, Mimi) → adapter → megatron-core LLM, and its text teacher.

The batch is a :class:`~nemo_salad.data.batch.SaladBatch` of tensors built by the data pipeline: student token ids
with slots for speech, the teacher's all-text ids, and the (student, teacher) position pairs where the two are
compared. A step encodes the batch's clips, scatters the adapter frames into the slots of the student's embeddings,
runs the student (with gradients) and the teacher (:mod:`nemo_salad.models.teacher`, without), and takes the fused
distillation loss at the pairs. Inference (:mod:`nemo_salad.models.inference`) and the NeMo-2 Megatron contract
(:mod:`nemo_salad.models.megatron_contract`) live in their own modules.

Legend: ``R``/``Rt`` student/teacher rows, ``Ts``/``Tt`` their lengths, ``C`` speech clips, ``N`` audio samples,
``F`` frames, ``H`` LLM width, ``P`` compared pairs.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Trainer
from nemo.core.classes import ModelPT
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from nemo_salad.data.batch import FrameCounter, SaladBatch
from nemo_salad.data.skips import HeldOutCount
from nemo_salad.llm import MegatronLLM
from nemo_salad.llm.parallel import data_parallel_group
from nemo_salad.losses import DistillationLoss, LossOutput
from nemo_salad.metrics import GapStats, gap_stats
from nemo_salad.models import build as P
from nemo_salad.models import inference
from nemo_salad.models.config import model_config
from nemo_salad.models.megatron_contract import MegatronContract, uses_megatron_strategy
from nemo_salad.models.network import SaladNetwork, unwrap_network
from nemo_salad.models.teacher import Teacher, make_teacher
from nemo_salad.modules.adapters import frame_mask
from nemo_salad.modules.lora import apply_lora
from nemo_salad.parts.safe_config import check_targets, resolve_target, safe_instantiate

__all__ = ["SaladModel", "SaladOutput"]


@dataclass
class SaladOutput:
    """What one forward pass gives the loss and the gap metrics."""

    student_hidden: Tensor  # (R, Ts, H) student on speech
    teacher_hidden: Tensor | None = None  # (Rt, Tt, H) teacher on the transcript


class SaladModel(MegatronContract, ModelPT):
    """The speech-adapted LLM and its text teacher, as a NeMo model (``.nemo`` save/restore, Lightning).

    Args:
        cfg (DictConfig): the ``model`` section (see ``conf/model/``): ``llm``, ``tokenizer``, ``encoder``,
            ``adapter`` (a ``_target_`` under the allowlist), ``teacher.mode``, ``loss``, ``optim``.
        trainer (Trainer | None): Lightning trainer; its strategy sets :attr:`megatron`.
        defer_build (bool | None): build in :meth:`configure_model` (default: under ``MegatronStrategy``).
    """

    def __init__(self, cfg: DictConfig | dict, trainer: Trainer | None = None, defer_build: bool | None = None
                 ) -> None:
        cfg = model_config(cfg)  # defaults of nemo_salad.models.config.ModelConfig; old keys of saved models dropped
        check_targets(cfg, source="SaladModel config")
        super().__init__(cfg=cfg, trainer=trainer)
        from nemo_salad.checkpoint.nemo_io import SafeSaveRestoreConnector

        self._save_restore_connector = SafeSaveRestoreConnector()  # also saves a tensor-parallel model
        self._load_pretrained = not self._is_model_being_restored()
        #: the strategy flag: NeMo-2 MegatronStrategy (megatron's schedule calls the steps) or plain Lightning
        self.megatron = uses_megatron_strategy(trainer)
        self.teacher_policy: Teacher | None = make_teacher(cfg.teacher.mode)
        self.loss = DistillationLoss(**cfg.loss)
        if self.loss.alpha > 0 and self.teacher_policy is None:
            raise ValueError("model.loss.alpha > 0 (distillation) needs a teacher: set model.teacher.mode to copy or "
                             "shared, or alpha to 0")
        self._built = False
        self._pending_config: Any = None  # megatron settings NeMo's MegatronStrategy sets before the build
        self._init_from: str | None = None
        self.tokenizer = self._setup_tokenizer(cfg)
        if not (self.megatron if defer_build is None else defer_build):
            self.configure_model()
        self.data_skipped: Counter[str] = Counter()  # samples the data pipeline dropped, by SKIP_KINDS (each logged)
        self.data_proportional = 0  # speech samples laid out with proportional word times (no alignment)
        self._min_samples: int | None = None
        self.clip_features = inference.ClipFeatureCache()  # encode_cuts of frozen clip-independent encoders
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
        from megatron.core import parallel_state as ps

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
        teacher = None
        if self.teacher_policy is not None:
            teacher = self.teacher_policy.build(llm, self._cfg.llm.arch, self._cfg.llm.get("attention", "sdpa"))
        self.module = SaladNetwork(llm, encoder, adapter, teacher)
        self._setup_training_mode(cfg.llm)
        self._built = True
        if self._pending_config is not None:
            self.config = self._pending_config
        if self._init_from:
            self._load_init_weights()

    def _setup_training_mode(self, llm_cfg: DictConfig) -> None:
        lora, frozen = llm_cfg.get("lora"), bool(llm_cfg.get("freeze", False))
        if lora:
            apply_lora(self.llm, rank=int(lora.get("rank", 16)), alpha=float(lora.get("alpha", 32)),
                       targets=tuple(lora.get("targets", ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"))),
                       dropout=float(lora.get("dropout", 0.0)))
        elif frozen:
            self.llm.requires_grad_(False)
        if self.teacher_policy is not None:
            self.teacher_policy.check(lora=bool(lora), frozen=frozen)

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

    def _load_init_weights(self) -> None:
        from nemo_salad.checkpoint.init_weights import load_weights

        load_weights(self, str(self._init_from))

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

    def train(self, mode: bool = True) -> SaladModel:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

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
        """The separate frozen teacher module (``teacher.mode=copy``); None in the other modes or before the build."""
        return self.network.teacher if self._built else None

    @property
    def teacher_mode(self) -> str:
        """``copy``, ``shared`` or ``none``."""
        return self.teacher_policy.mode if self.teacher_policy is not None else "none"

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id or 0)

    # ------------------------------------------------------------------ NeMo ModelPT hooks
    def setup(self, stage: str | None = None) -> None:
        """The strategy flag follows the trainer that fits the model (it may differ from the one at construction)."""
        super().setup(stage)
        if self._trainer is not None:
            self.megatron = uses_megatron_strategy(self._trainer)

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
        from nemo_salad.checkpoint.nemo_io import SafeSaveRestoreConnector

        return super().restore_from(restore_path, *args, save_restore_connector=save_restore_connector
                                    or SafeSaveRestoreConnector(), **kwargs)

    # ------------------------------------------------------------------ what the data pipeline needs
    def _encoder_for_lengths(self) -> Any:
        """The encoder, or before a deferred build a throwaway copy (which needs no parallel state)."""
        if self._built:
            return self.encoder
        enc_cfg = self._cfg.encoder
        return P.build_speech_encoder(enc_cfg, load_weights=bool(enc_cfg.get("pretrained")))

    @property
    def min_audio_samples(self) -> int:
        """Fewest audio samples that give one encoder frame."""
        if self._min_samples is None:
            self._min_samples = self._encoder_for_lengths().min_samples()
        return self._min_samples

    def frame_counter(self, max_seconds: float = 40.0) -> FrameCounter:
        """Adapter frames per clip length up to ``max_seconds`` (the encoder's length formula, then the adapter's
        ``downsample`` stacking): what the data pipeline lays out speech slots with."""
        encoder = self._encoder_for_lengths()
        if self._built:
            downsample = int(getattr(self.adapter, "downsample", 1))
        else:
            adapter = self._cfg.adapter
            default = inspect.signature(resolve_target(adapter._target_)).parameters.get("downsample")
            downsample = int(adapter.get("downsample", default.default if default is not None else 1))
        return FrameCounter.from_formula(encoder.encoded_lengths, round(max_seconds * encoder.sample_rate), downsample)

    @property
    def context_length(self) -> int:
        """The LLM's context (``max_position_embeddings``): longer samples are skipped by the data pipeline."""
        if self._built:
            return int(self.llm.cfg.max_position_embeddings)
        return int(P.llm_arch(self._cfg.llm).max_position_embeddings)

    # ------------------------------------------------------------------ the network on a batch
    def perceive(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder + adapter: ``(C, N), (C,) → (C, F, H), (C,)`` speech embeddings in the LLM input space."""
        feats, lens = self.encoder(audio, audio_lens)
        return self.adapter(feats, lens)

    def student_inputs(self, batch: SaladBatch, speech: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Student input embeddings ``(R, Ts, H)``: token embeddings, with the adapter's frames scattered into the
        speech slots; ``speech`` (``(C, F, H), (C,)``) replaces :meth:`perceive` (a test hook).

        Raises:
            RuntimeError: when the encoder and adapter produce other frame counts than the data pipeline laid out
                (its ``FrameCounter`` does not describe this model), naming the clips' samples.
        """
        embeds = self.llm.embed(batch.student_ids)
        if not batch.has_speech:
            return embeds
        frames, lens = speech if speech is not None else self.perceive(batch.audio, batch.audio_lens)
        if not torch.equal(lens.long(), batch.clip_frames.to(lens.device)):
            raise RuntimeError(f"the speech path produced {lens.tolist()} frames for clips laid out with "
                               f"{batch.clip_frames.tolist()} slots (samples {batch.sample_ids}): the data pipeline's "
                               "FrameCounter does not match this encoder and adapter")
        valid = frames[frame_mask(lens, frames.shape[1])]  # (ΣF, H) in slot order
        if valid.shape[0] != int(batch.speech_mask.sum()):
            raise RuntimeError(f"{valid.shape[0]} speech frames for {int(batch.speech_mask.sum())} speech slots "
                               f"(samples {batch.sample_ids}): the batch's clip_frames and speech_mask disagree")
        return embeds.masked_scatter(batch.speech_mask[..., None], valid.to(embeds.dtype))

    def student_hidden(self, batch: SaladBatch, speech: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Student final hidden states ``(R, Ts, H)`` on the speech input, attention confined to each document."""
        return self.llm.hidden_states(inputs_embeds=self.student_inputs(batch, speech),
                                      attention_mask=batch.attention_mask(batch.student_doc),
                                      position_ids=batch.student_position_ids())

    def student_text_hidden(self, batch: SaladBatch) -> Tensor:
        """Student final hidden states ``(Rt, Tt, H)`` on the all-text sequence (forgetting, misalignment)."""
        return self.llm.hidden_states(input_ids=batch.teacher_ids, attention_mask=batch.attention_mask(
            batch.teacher_doc), position_ids=batch.teacher_position_ids())

    def teacher_hidden(self, batch: SaladBatch) -> Tensor:
        """Teacher final hidden states ``(Rt, Tt, H)`` on the all-text sequence, without gradients."""
        if self.teacher_policy is None:
            raise RuntimeError("model.teacher.mode=none: this model has no teacher")
        return self.teacher_policy.hidden_states(self.network, batch.teacher_ids, batch.attention_mask(
            batch.teacher_doc), batch.teacher_position_ids())

    def teacher_logits(self, hidden: Tensor) -> Tensor:
        """Project teacher hidden states to logits (the teacher's own output layer)."""
        return self.teacher_policy.logits(self.network, hidden)

    @property
    def teacher_output_weight(self) -> Tensor:
        """The teacher's ``(V, H)`` output projection (the student's own, detached, in shared mode)."""
        return self.teacher_policy.output_weight(self.network)

    def forward(self, batch: SaladBatch, teacher: bool = True) -> SaladOutput:
        """Student (with gradients) and, if ``teacher`` and the model has one, the teacher: the inputs the loss
        and the gap metrics share."""
        student = self.student_hidden(batch)
        return SaladOutput(student, self.teacher_hidden(batch) if teacher and self.teacher_policy else None)

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: SaladBatch, out: SaladOutput | None = None) -> LossOutput | None:
        """α·KD + (1−α)·NLL at every student position whose next token is text; None if nothing to learn.

        ``out`` (from :meth:`forward`) reuses forward passes already run on this batch."""
        if batch.num_targets == 0:
            return None
        out = out if out is not None else self.forward(batch, teacher=self.loss.alpha > 0)
        student = out.student_hidden.flatten(0, 1)[batch.student_pos]  # (P, H)
        teacher = t_weight = None
        if self.loss.alpha > 0:
            teacher = out.teacher_hidden.flatten(0, 1)[batch.teacher_pos]
            t_weight = self.teacher_output_weight
        return self.loss(student, self.llm.output_weight, teacher, t_weight, batch.targets, tp_group=self.llm.tp_group)

    def training_step(self, batch: SaladBatch, batch_idx: int | None = None) -> Tensor | None:
        """The training loss (see :meth:`_nothing_to_learn` for a batch without targets). Under Megatron a
        text-replay batch gives the speech path exact-zero gradients: megatron's overlapped reduction waits for a
        gradient of every parameter of a bucket (plain DDP finds unused parameters itself)."""
        self._count_data(batch)
        out = self.compute_loss(batch)
        if out is None:
            return self._nothing_to_learn()
        n = max(batch.num_samples, 1)
        logged = {"train/loss": out.loss.detach(), "train/kd": out.kd, "train/nll": out.nll,
                  "train/tokens": float(out.num_tokens), "train/positions": float(batch.positions),
                  "train/padded_fraction": batch.padded_fraction}
        self.log_dict({k: v for k, v in logged.items() if v is not None}, batch_size=n)  # kd: None when α = 0
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False, batch_size=n)
        if self.megatron and not batch.has_speech:
            return out.loss + self._zero_touching(self.encoder, self.adapter)
        return out.loss

    def _nothing_to_learn(self) -> Tensor | None:
        """The step's result for a batch without targets (every sample skipped): None in one process (Lightning
        skips the step); with several ranks, which must all run backward, a zero — reaching every parameter under
        Megatron, and under plain DDP only what every non-empty batch trains anyway (the LLM or its LoRA), so that
        the speech path keeps no gradient, as when one process accumulates the same batches."""
        if self.megatron:
            return self._zero_touching(self.network)
        if self._trainer is None or self._trainer.world_size == 1:
            return None
        trained = any(p.requires_grad for p in self.llm.parameters())
        return self._zero_touching(self.llm if trained else self.network)

    def _count_data(self, batch: SaladBatch) -> None:
        """Count the data pipeline's skips; the datamodule's monitor stops the run when a source is unusable."""
        self.data_skipped.update(batch.skip_kinds)
        self.data_proportional += len(batch.proportional)
        monitor = getattr(getattr(self._trainer, "datamodule", None), "skip_monitor", None)
        if monitor is not None:
            monitor.update(batch.source, batch.num_samples, batch.skipped)
        n = max(batch.num_samples, 1)
        self.log_dict({"train/skipped": float(self.data_skipped.total()), **{f"train/skipped/{k}": float(v) for k, v
                       in self.data_skipped.items()}, "train/proportional_cuts": float(self.data_proportional)},
                      batch_size=n)

    @staticmethod
    def _zero_touching(*modules: torch.nn.Module) -> Tensor:
        """0 · Σ of every trainable parameter of ``modules``: adds nothing to a loss, gives each a zero gradient
        (megatron's DDP reduces gradients bucket by bucket as they become ready, and its distributed optimizer
        updates every parameter anyway: there an absent gradient counts as zero)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return sum((p.float().sum() * 0.0 for p in params), torch.zeros((), device=params[0].device if params
                                                                                else None))

    def validation_step(self, batch: SaladBatch, batch_idx: int | None = None) -> Tensor | None:
        self._val_items.add(batch)
        zero = self.llm.output_weight.sum() * 0.0  # a tensor (megatron's schedule reduces what the step returns)
        if not batch.num_samples:  # every sample skipped (counted above)
            return zero
        out = self(batch)  # shared by the loss and the gap metrics
        loss = self.compute_loss(batch, out)
        if loss is not None:
            logged = {"val/loss": loss.loss, "val/kd": loss.kd, "val/nll": loss.nll}
            self.log_dict({k: v for k, v in logged.items() if v is not None},  # kd: None when α = 0
                          batch_size=max(batch.num_samples, 1), sync_dist=True)
        self._val_gap += gap_stats(self, batch, outputs=out)
        return loss.loss if loss is not None else zero

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

        return build_optimizer(self, OmegaConf.to_container(self.cfg.optim, resolve=True),
                               self.trainer.max_steps if self.trainer is not None else -1)

    # ------------------------------------------------------------------ inference (nemo_salad.models.inference)
    def encode_cuts(self, cuts: Sequence[Any]) -> list[Tensor]:
        """Speech embeddings ``(F_i, H)`` of lhotse cuts; see :func:`~nemo_salad.models.inference.encode_cuts`."""
        return inference.encode_cuts(self, cuts)

    def generate(self, audios: Sequence[Any], sample_rate: int = 16000, prompt: str = "", prefix: str = "",
                 max_new_tokens: int = 32, ids: Sequence[str] | None = None) -> list[str]:
        """Greedy decoding from speech; see :func:`~nemo_salad.models.inference.generate`."""
        return inference.generate(self, audios, sample_rate, prompt, prefix, max_new_tokens, ids)
