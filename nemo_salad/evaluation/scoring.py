"""Log-likelihood scoring of answer options, the context encoded once per item.

:func:`score_shared_context` packs ``[context, option_1, ..., option_k]`` of an item into ONE row: a tree
attention mask lets every option token see the context and the earlier tokens of its own option only, and the
position ids of every option restart right after the context. This is exactly the computation of ``k``
separate forwards of ``context + option_j`` (proved in ``tests/llm/test_model.py`` and checked against
:func:`score_full_forward` in ``tests/evaluation/test_scoring.py``) at the cost of one context. Several items are
packed per forward (right-padded, sorted by length, up to ``batch_tokens`` positions per batch), and the
vocabulary projection runs only at the positions that predict an option token.

Legend: ``L`` context length, ``H`` hidden size, ``B`` rows per batch, ``T`` padded row length, ``N`` option
tokens in the batch, ``V`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["OptionScore", "ScoreRequest", "normalised_scores", "score_full_forward", "score_shared_context",
           "tree_layout"]


@dataclass(frozen=True)
class ScoreRequest:
    """One item to score.

    Args:
        context (Tensor): ``(L, H)`` input embeddings of the context (``L >= 1``).
        options (Sequence[Sequence[int]]): token ids of each option continuation (each non-empty).
    """

    context: Tensor
    options: Sequence[Sequence[int]]

    def __post_init__(self) -> None:
        if self.context.dim() != 2 or self.context.shape[0] < 1:
            raise ValueError(f"context must be (L>=1, H) embeddings, got shape {tuple(self.context.shape)}")
        if not self.options or any(len(o) == 0 for o in self.options):
            raise ValueError(f"every option needs at least one token; got lengths {[len(o) for o in self.options]}")

    @property
    def row_length(self) -> int:
        return self.context.shape[0] + sum(len(o) for o in self.options)


@dataclass(frozen=True)
class OptionScore:
    """Log-likelihood of one option and its normalisations (per token, per character of the option string).

    >>> s = OptionScore(logprob=-6.0, n_tokens=3, n_chars=12); s.per_token, s.per_char
    (-2.0, -0.5)
    """

    logprob: float
    n_tokens: int
    n_chars: int

    @property
    def per_token(self) -> float:
        return self.logprob / self.n_tokens

    @property
    def per_char(self) -> float:
        return self.logprob / max(self.n_chars, 1)

    def get(self, metric: str) -> float:
        """``"sum"`` (unnormalised), ``"per_token"`` or ``"per_char"``."""
        if metric == "sum":
            return self.logprob
        if metric in ("per_token", "per_char"):
            return getattr(self, metric)
        raise ValueError(f"unknown metric {metric!r}; expected 'sum', 'per_token' or 'per_char'")


def normalised_scores(logprobs: Sequence[float], options: Sequence[str], option_ids: Sequence[Sequence[int]]
                      ) -> list[OptionScore]:
    """Attach token and character counts to the summed log-probabilities of an item's options.

    >>> [s.per_char for s in normalised_scores([-2.0, -3.0], [" ab", " abcde"], [[1], [1, 2]])]
    [-0.6666666666666666, -0.5]
    """
    return [OptionScore(float(lp), len(ids), len(text))
            for lp, text, ids in zip(logprobs, options, option_ids, strict=True)]


def tree_layout(context_len: int, option_lens: Sequence[int], total_len: int) -> tuple[Tensor, Tensor]:
    """Segment ids and positions of one packed row ``[context, option_1, ..., option_k, padding]``.

    Args:
        context_len (int): L.
        option_lens (Sequence[int]): length of each option.
        total_len (int): padded row length T.

    Returns:
        tuple[Tensor, Tensor]: ``segment (T,)`` — 0 context, ``j+1`` option ``j``, -1 padding — and
        ``positions (T,)`` — ``0..L-1`` then ``L, L+1, ...`` restarting for every option, 0 on padding.

    >>> seg, pos = tree_layout(3, [2, 1], 7)
    >>> seg.tolist(), pos.tolist()
    ([0, 0, 0, 1, 1, 2, -1], [0, 1, 2, 3, 4, 3, 0])
    """
    seg = torch.full((total_len,), -1, dtype=torch.long)
    pos = torch.zeros(total_len, dtype=torch.long)
    seg[:context_len] = 0
    pos[:context_len] = torch.arange(context_len)
    start = context_len
    for j, m in enumerate(option_lens):
        seg[start:start + m] = j + 1
        pos[start:start + m] = torch.arange(context_len, context_len + m)
        start += m
    if start > total_len:
        raise ValueError(f"row of length {start} does not fit total_len={total_len}")
    return seg, pos


def tree_attention_mask(segments: Tensor) -> Tensor:
    """Megatron mask ``(B, 1, T, T)`` (True = masked) from segment ids ``(B, T)``.

    A query may attend to an earlier-or-same key that is context, or of its own option. Padding queries attend
    to the context (never a fully masked row); nobody attends to padding.

    >>> seg, _ = tree_layout(2, [1, 1], 4)
    >>> (~tree_attention_mask(seg[None]))[0, 0].int().tolist()  # 1 = may attend
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]]
    """
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()  # (T, T)
    q, k = segments[:, :, None], segments[:, None, :]  # (B, T, 1), (B, 1, T)
    allowed = causal & (k >= 0) & ((k == 0) | (k == q))  # (B, T, T)
    return ~allowed[:, None]


def _option_logprobs(llm, hidden: Tensor, rows: Tensor, preds: Tensor, targets: Tensor, owner: Tensor,
                     n_options: int, logit_chunk: int) -> Tensor:
    """Sum per option of ``log p(target | hidden at pred)``, projecting only the needed positions."""
    out = torch.zeros(n_options, dtype=torch.float64, device=hidden.device)
    for s in range(0, len(preds), logit_chunk):
        h = hidden[rows[s:s + logit_chunk], preds[s:s + logit_chunk]]  # (n, H)
        logp = llm.logits(h).float().log_softmax(-1)  # (n, V)
        tok = logp.gather(-1, targets[s:s + logit_chunk, None])[:, 0]  # (n,)
        out.index_add_(0, owner[s:s + logit_chunk], tok.double())
    return out


def _score_packed(llm, reqs: Sequence[ScoreRequest], logit_chunk: int) -> list[list[float]]:
    device, dtype = reqs[0].context.device, reqs[0].context.dtype
    total = max(r.row_length for r in reqs)
    n_rows, hidden_size = len(reqs), reqs[0].context.shape[1]
    x = torch.zeros(n_rows, total, hidden_size, dtype=dtype, device=device)  # (B, T, H)
    seg = torch.empty(n_rows, total, dtype=torch.long)
    pos = torch.empty(n_rows, total, dtype=torch.long)
    all_ids = torch.tensor([t for r in reqs for o in r.options for t in o], dtype=torch.long, device=device)
    opt_emb = llm.embed(all_ids[None])[0].to(dtype)  # (N, H)
    rows, preds, owner, used, n_opt = [], [], [], 0, 0
    for b, r in enumerate(reqs):
        ctx_len = r.context.shape[0]
        lens = [len(o) for o in r.options]
        seg[b], pos[b] = tree_layout(ctx_len, lens, total)
        x[b, :ctx_len] = r.context
        x[b, ctx_len:ctx_len + sum(lens)] = opt_emb[used:used + sum(lens)]
        start = ctx_len
        for m in lens:
            # option token t is predicted from the context's last position (t = 0) or option token t-1
            preds.extend([ctx_len - 1, *range(start, start + m - 1)])
            rows.extend([b] * m)
            owner.extend([n_opt] * m)
            start, n_opt = start + m, n_opt + 1
        used += sum(lens)
    hidden = llm.hidden_states(inputs_embeds=x, attention_mask=tree_attention_mask(seg.to(device)),
                               position_ids=pos.to(device))  # (B, T, H)
    sums = _option_logprobs(llm, hidden, torch.tensor(rows, device=device), torch.tensor(preds, device=device),
                            all_ids, torch.tensor(owner, device=device), n_opt, logit_chunk).tolist()
    out, k = [], 0
    for r in reqs:
        out.append(sums[k:k + len(r.options)])
        k += len(r.options)
    return out


def _batches(reqs: Sequence[ScoreRequest], batch_tokens: int) -> list[list[int]]:
    """Indices of ``reqs`` grouped so that ``rows * longest_row <= batch_tokens`` (longest first)."""
    order = sorted(range(len(reqs)), key=lambda i: -reqs[i].row_length)
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * reqs[batches[-1][0]].row_length <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def score_shared_context(llm, requests: Sequence[ScoreRequest], batch_tokens: int = 4096,
                         logit_chunk: int = 1024, desc: str | None = None) -> list[list[float]]:
    """Summed log-probability of every option of every request, one packed row per item.

    Args:
        llm (MegatronLLM): the model (its mode is left as is: call ``.eval()`` first).
        requests (Sequence[ScoreRequest]): items.
        batch_tokens (int): at most this many positions (rows x padded length) per forward. Default: 4096.
        logit_chunk (int): option positions projected to the vocabulary at once. Default: 1024.
        desc (str | None): show a progress bar over the batches with this label. Default: None (no bar).

    Returns:
        list[list[float]]: ``[item][option]`` summed log-probabilities (natural log).

    >>> from nemo_salad.llm import LLMConfig, MegatronLLM
    >>> llm = MegatronLLM(LLMConfig.preset("tiny-llama")).eval()
    >>> ctx = llm.embed(torch.tensor([[5, 6, 7]]))[0]
    >>> scores = score_shared_context(llm, [ScoreRequest(ctx, [[1, 2], [3]])])
    >>> len(scores), len(scores[0])
    (1, 2)
    """
    max_row = getattr(getattr(llm, "cfg", None), "max_position_embeddings", None)
    parts, owner = [], []
    for i, req in enumerate(requests):
        for part in _split_row(req, max_row):
            parts.append(part)
            owner.append(i)
    out: list[list[float]] = [[] for _ in requests]
    scored: list[list[float]] = [[] for _ in parts]
    batches = _batches(parts, batch_tokens)
    if desc is not None:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", leave=False)
    for batch in batches:
        for i, sums in zip(batch, _score_packed(llm, [parts[i] for i in batch], logit_chunk), strict=True):
            scored[i] = sums
    for i, sums in zip(owner, scored, strict=True):
        out[i].extend(sums)
    return out


def _split_row(req: ScoreRequest, max_row: int | None) -> list[ScoreRequest]:
    """Split the options of a row longer than the model's context into several rows sharing the context."""
    if max_row is None or req.row_length <= max_row:
        return [req]
    ctx_len = req.context.shape[0]
    groups: list[list[Sequence[int]]] = [[]]
    for opt in req.options:
        if groups[-1] and ctx_len + sum(len(o) for o in groups[-1]) + len(opt) > max_row:
            groups.append([])
        groups[-1].append(opt)
    return [ScoreRequest(req.context, g) for g in groups]


@torch.no_grad()
def score_full_forward(llm, requests: Sequence[ScoreRequest], batch_options: bool = False) -> list[list[float]]:
    """Reference scorer: one full forward of ``context + option`` per option (lm-eval style).

    Args:
        llm (MegatronLLM): the model.
        requests (Sequence[ScoreRequest]): items.
        batch_options (bool): False: one unpadded forward per option with the default causal mask and full
            logits (the independent reference); True: the options of one item right-padded in one batch, the
            vocabulary projected only where needed (the fair speed baseline). Default: False.

    Returns:
        list[list[float]]: ``[item][option]`` summed log-probabilities.

    >>> from nemo_salad.llm import LLMConfig, MegatronLLM
    >>> llm = MegatronLLM(LLMConfig.preset("tiny-llama")).eval()
    >>> req = ScoreRequest(llm.embed(torch.tensor([[5, 6, 7]]))[0].detach(), [[1, 2], [3]])
    >>> a, b = score_full_forward(llm, [req])[0], score_shared_context(llm, [req])[0]
    >>> max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    True
    """
    out = []
    for r in requests:
        ctx_len = r.context.shape[0]
        opts = [torch.tensor(o, dtype=torch.long, device=r.context.device) for o in r.options]
        if not batch_options:
            sums = []
            for ids in opts:
                x = torch.cat([r.context, llm.embed(ids[None])[0].to(r.context.dtype)])[None]  # (1, L+m, H)
                logp = llm(inputs_embeds=x)[0, ctx_len - 1:-1].double().log_softmax(-1)  # (m, V)
                sums.append(logp.gather(-1, ids[:, None]).sum().item())
            out.append(sums)
            continue
        total = ctx_len + max(len(o) for o in opts)
        x = r.context.new_zeros(len(opts), total, r.context.shape[1])  # (k, T, H)
        mask = torch.zeros(len(opts), total, dtype=torch.bool, device=r.context.device)
        for j, ids in enumerate(opts):
            x[j, :ctx_len] = r.context
            x[j, ctx_len:ctx_len + len(ids)] = llm.embed(ids[None])[0].to(x.dtype)
            mask[j, :ctx_len + len(ids)] = True
        hidden = llm.hidden_states(inputs_embeds=x, padding_mask=mask)  # (k, T, H)
        rows = torch.cat([torch.full((len(ids),), j) for j, ids in enumerate(opts)]).to(x.device)
        preds = torch.cat([torch.arange(ctx_len - 1, ctx_len - 1 + len(ids)) for ids in opts]).to(x.device)
        owner = rows.clone()
        out.append(_option_logprobs(llm, hidden, rows, preds, torch.cat(opts), owner, len(opts), 1024).tolist())
    return out
