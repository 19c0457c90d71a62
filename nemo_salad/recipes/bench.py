"""Helpers shared by the scripts in ``benchmarks/`` (and the tests that check what they measure): compose a shipped
config, fixed synthetic batches, a tiny tokenizer, the plain path's reference steps, timing."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nemo_salad.data.batch import Segment

__all__ = ["COMPARISON_OPTIM", "compose_config", "fit_on_batches", "fixed_batch", "make_tokenizer", "median_time",
           "peak_rss_mb", "plain_steps", "tone_batches"]

CONF = Path(__file__).resolve().parents[2] / "conf"

#: ``model.optim`` for comparing two training paths step by step (no gradient clipping on either). Adam's eps is large
#: enough that the rounding noise in gradients that are zero in exact arithmetic (attention key biases), which
#: summation order changes (tensor parallelism, another kernel), does not become a learning-rate-sized step.
COMPARISON_OPTIM = {"adapter_lr": 1e-3, "llm_lr": 2e-4, "warmup_steps": 0, "decay_fraction": 0.0, "weight_decay": 0.1,
                    "eps": 1e-6}

#: the words of the synthetic batches (real English, so any tokenizer splits them as it splits text)
WORDS = ("the distillation objective aligns the speech model with the original text model so that spoken "
         "questions are understood as well as written ones across many domains and topics").split()

#: what :func:`make_tokenizer` trains on
SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "speech and text are two views of language",
    "he turned sharply and faced gregson across the table", "ever tried ever failed no matter try again",
]


def compose_config(name: str, overrides: list[str]) -> Any:
    """A Hydra config from ``conf/`` (the repository's, not an installed copy)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=name, overrides=overrides)


def fixed_batch(model: Any, samples: int = 4, speech_seconds: float = 3.0, seed: int = 0,
                pack_length: int | None = None) -> Any:
    """``samples`` interleaved samples ``[text, speech, text]`` of real English words and random audio, laid out for
    ``model`` as a :class:`~nemo_salad.data.batch.SaladBatch` (packed into rows of ``pack_length`` if set)."""
    from nemo_salad.data.batch import collate, make_document

    g = torch.Generator().manual_seed(seed)
    words = WORDS
    encode = lambda text: model.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    n = int(16000 * speech_seconds)
    clips = [0.1 * torch.randn(n, generator=g) for _ in range(samples)]
    frames = model.frame_counter(max_seconds=speech_seconds)
    docs = [make_document(f"b{i}", [Segment("text", encode(" ".join(words[i:i + 12]))),
                                    Segment("speech", encode(" " + " ".join(words[i + 12:i + 20])), clip=i),
                                    Segment("text", encode(" " + " ".join(words[i + 4:i + 16])))],
                          [n] * samples, frames, model.pad_id) for i in range(samples)]
    return collate(docs, clips, model.pad_id, pack_length)


def tone_batches(model: Any, count: int, samples: int = 4, seed: int = 0, pack_length: int | None = None
                 ) -> list[Any]:
    """``count`` batches of ``samples`` documents ``[text, speech, text]`` each, the spans drawn at random from
    :data:`WORDS`, the speech span voiced by :class:`~nemo_salad.synthesis.SineBackend` (16 kHz, a tone whose length
    follows the text and whose pitch identifies it): speech a model can learn from, without any TTS asset.

    Returns:
        list[SaladBatch]: laid out for ``model`` (packed into rows of ``pack_length`` if set).
    """
    from nemo_salad.data.batch import collate, make_document
    from nemo_salad.synthesis import SineBackend

    tone, g = SineBackend(), torch.Generator().manual_seed(seed)
    encode = lambda text: model.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    span = lambda n: " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=g))  # noqa: E731
    out = []
    for _ in range(count):
        spans = [(span(10), span(6), span(10)) for _ in range(samples)]
        clips = [torch.from_numpy(w) for w in tone.synthesize([speech for _, speech, _ in spans])]
        frames = model.frame_counter(max_seconds=max(len(c) for c in clips) / tone.sample_rate)
        docs = [make_document(f"t{i}", [Segment("text", encode(before)), Segment("speech", encode(" " + speech), i),
                                        Segment("text", encode(" " + after))],
                              [len(c) for c in clips], frames, model.pad_id)
                for i, (before, speech, after) in enumerate(spans)]
        out.append(collate(docs, clips, model.pad_id, pack_length))
    return out


def make_tokenizer(out: Path, vocab_size: int = 120) -> Path:
    """Train a small BPE (lower-case letters, ``<unk>`` otherwise) and save it as a ``transformers`` tokenizer.

    Its vocabulary (< 256) fits the ``tiny-llama`` preset (and every larger one): the tokenizer of tests and dry runs.

    >>> import tempfile
    >>> tok = make_tokenizer(Path(tempfile.mkdtemp()) / "tok")
    >>> (tok / "tokenizer.json").is_file()
    True
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<unk>"],
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"))
    tok.train_from_iterator(SENTENCES * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(str(out))
    return out


def plain_steps(model: Any, batches: list[list[Any]], optim: dict[str, Any]) -> list[float]:
    """The plain path's reference steps (the model's precision, ``torch.optim.AdamW`` over ``param_groups``, the WSD
    schedule): per step, the mean of the losses of the step's micro-batches (what data parallelism over
    ``len(batches[i])`` ranks computes), then one AdamW step.

    Args:
        model (SaladModel): built, in train mode, on its device. batches: per step, its micro-batches (on the
            model's device). optim (dict): the ``model.optim`` section (e.g. :data:`COMPARISON_OPTIM`).

    Returns:
        list[float]: the loss of each step.
    """
    from nemo_salad.parts.optim import build_optimizer

    opt = build_optimizer(model, optim, max_steps=100)
    optimizer, sched = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    losses = []
    for parts in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(model.compute_loss(b).loss for b in parts) / len(parts)
        loss.backward()
        optimizer.step()
        sched.step()
        losses.append(float(loss))
    return losses


class _Cycle(torch.utils.data.IterableDataset):
    """An endless stream over ``batches`` from index ``start`` (the recipe's training stream is endless too)."""

    def __init__(self, batches: list[Any], start: int = 0) -> None:
        self.batches, self.start = batches, start

    def __iter__(self) -> Any:
        i = self.start
        while True:
            yield self.batches[i % len(self.batches)]
            i += 1


def fit_on_batches(cfg: Any, make_batches: Callable[[Any], list[Any]], start: int = 0,
                   ckpt_path: str | None = None) -> tuple[dict[int, float], Any]:
    """``trainer.fit`` of the training recipe of ``cfg`` (:func:`nemo_salad.recipes.train.build`: its trainer,
    strategy, checkpoints and callbacks) on ``make_batches(model)`` cycled endlessly from batch ``start``, instead of
    the data module's stream; resumed from ``ckpt_path`` if given (give ``start`` = the checkpoint's step count).

    Returns:
        tuple: the logged ``train/loss`` after each global step (step -> loss), and the trained model.
    """
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from nemo_salad.recipes.train import build

    class LossRecord(pl.Callback):
        def __init__(self) -> None:
            self.losses: dict[int, float] = {}

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            self.losses[trainer.global_step] = float(trainer.callback_metrics["train/loss"])

    trainer, model, _ = build(cfg)
    record = LossRecord()
    trainer.callbacks.append(record)
    stream = DataLoader(_Cycle(make_batches(model), start), batch_size=None, collate_fn=lambda b: b)
    trainer.fit(model, train_dataloaders=stream, ckpt_path=ckpt_path)
    return record.losses, model


def median_time(fn: Callable[[], Any], reps: int) -> float:
    """Median wall time of ``fn`` over ``reps`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
