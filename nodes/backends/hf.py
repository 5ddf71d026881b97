"""Real transformers models behind the backend interfaces.

HfTarget keeps one KV cache per session and verifies the drafts of several sessions in ONE forward pass:
each session's cached keys/values are left-padded to the longest, its new tokens right-padded, and an
attention mask plus explicit position ids keep every row exactly what it would be alone. After the pass each
row's cache is cut back to the tokens it committed (prompt + accepted drafts; the correction/bonus token is
fed next round), so a rejected draft never pollutes the cache.

HfDraft keeps one KV cache per session for its chain of unverified drafts and rolls it back on a verdict.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from nodes.models import load, tokenizer_fingerprint
from nodes.verification import (acceptance_probability, greedy_verify, sample_draft_token, softmax,
                            stochastic_verify)
from nodes.backends import DraftToken, Sampling, VerifyRequest, VerifyResult, position_rng

KV = list[tuple[torch.Tensor, torch.Tensor]]    # per layer: keys, values shaped [1, heads, tokens, head_dim]


def kv_len(kv: KV | None) -> int:
    return 0 if not kv else kv[0][0].shape[-2]


@torch.inference_mode()
def batched_forward(model, pasts: list[KV | None], feeds: list[list[int]]) -> tuple[torch.Tensor, list[KV]]:
    """Logits [B, Lmax, V] for each row's fed tokens, and each row's cache extended by its fed tokens."""
    device = model.device
    B = len(feeds)
    P = [kv_len(p) for p in pasts]
    L = [len(f) for f in feeds]
    Pmax, Lmax = max(P), max(L)
    ids = torch.zeros((B, Lmax), dtype=torch.long)
    mask = torch.zeros((B, Pmax + Lmax), dtype=torch.long)
    for b in range(B):
        ids[b, :L[b]] = torch.tensor(feeds[b])
        mask[b, Pmax - P[b]:Pmax + L[b]] = 1
    positions = torch.arange(Lmax)[None, :] + torch.tensor(P)[:, None]
    if Pmax:
        layers = []
        some = next(p for p in pasts if p)
        for i, (ref, _) in enumerate(some):
            ks, vs = [], []
            for b, past in enumerate(pasts):
                k, v = past[i] if past else (ref[:, :, :0], ref[:, :, :0])
                if P[b] < Pmax:      # left-pad shorter rows; a row of full length is used as it is
                    pad = ref.new_zeros(ref.shape[:2] + (Pmax - P[b],) + ref.shape[3:])
                    k, v = torch.cat([pad, k], dim=-2), torch.cat([pad, v], dim=-2)
                ks.append(k)
                vs.append(v)
            layers.append((torch.cat(ks) if B > 1 else ks[0], torch.cat(vs) if B > 1 else vs[0]))
        cache = DynamicCache(ddp_cache_data=layers, config=model.config)
    else:
        cache = DynamicCache(config=model.config)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                past_key_values=cache, use_cache=True)
    rows: list[KV] = []
    for b in range(B):
        lo, hi = Pmax - P[b], Pmax + L[b]
        rows.append([(layer.keys[b:b + 1, :, lo:hi].clone(), layer.values[b:b + 1, :, lo:hi].clone())
                     for layer in cache.layers])
    return out.logits.float(), rows


def crop(kv: KV, length: int) -> KV:
    return [(k[..., :length, :], v[..., :length, :]) for k, v in kv]


class _HfBase:
    def __init__(self, model: str, device: str = "auto", dtype: str = "float32", threads: int | None = None):
        self.tokenizer, self.model, self.device = load(model, device, dtype, threads)
        self.model_id = model
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.vocab_size = int(self.model.config.vocab_size)   # = logits width (quantised heads hide .weight)
        self.eos_token_id = self.tokenizer.eos_token_id

    def cost_s(self, work) -> None:
        """Real compute: it takes what it takes (the shell measures it)."""
        return None


@dataclass
class _TargetSession:
    tokens: list[int]
    kv: KV | None = None


class HfTarget(_HfBase):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.sessions: dict[str, _TargetSession] = {}

    def open(self, session: str, prompt: list[int], committed: list[int] = ()) -> None:
        """committed: a session resumed after a verifier restart; its first pass re-prefills prompt + committed."""
        self.sessions[session] = _TargetSession(list(prompt) + list(committed))

    def close(self, session: str) -> None:
        self.sessions.pop(session, None)

    def verify(self, requests: list[VerifyRequest]) -> list[VerifyResult]:
        started = time.perf_counter()
        states = [self.sessions[r.session] for r in requests]
        feeds = [s.tokens[kv_len(s.kv):] + [d.token for d in r.draft] for s, r in zip(states, requests)]
        logits, rows = batched_forward(self.model, [s.kv for s in states], feeds)
        results = []
        for b, (s, r) in enumerate(zip(states, requests)):
            g, n_fed = len(r.draft), len(feeds[b])
            judged = logits[b, n_fed - g - 1:n_fed]          # predictions after the last committed token and each draft
            if r.sampling.greedy:
                argmax = judged.argmax(-1).tolist()
                n, token = greedy_verify([d.token for d in r.draft], argmax)
                probs = [float(d.token == a) for d, a in zip(r.draft, argmax)]
            else:
                p = softmax(judged.double().cpu().numpy(), r.sampling.temperature)
                n, token = stochastic_verify(r.draft, p, r.rng)
                probs = [acceptance_probability(d, p[j]) for j, d in enumerate(r.draft)]
            past = kv_len(s.kv)
            s.kv = crop(rows[b], past + n_fed - g + n)       # committed tokens only; `token` is fed next round
            s.tokens += [d.token for d in r.draft[:n]] + [token]
            results.append(VerifyResult(n, token, accept_probs=probs))
        share = (time.perf_counter() - started) / len(requests)
        for res in results:
            res.compute_s = share
        return results


@dataclass
class _DraftSession:
    tokens: list[int]
    sampling: Sampling
    chain: list[DraftToken] = field(default_factory=list)
    cache: DynamicCache | None = None


class HfDraft(_HfBase):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.sessions: dict[str, _DraftSession] = {}

    def open(self, session: str, prompt: list[int], sampling: Sampling) -> None:
        self.sessions[session] = _DraftSession(list(prompt), sampling, cache=DynamicCache(config=self.model.config))

    def close(self, session: str) -> None:
        self.sessions.pop(session, None)

    @torch.inference_mode()
    def extend(self, session: str, k: int) -> list[DraftToken]:
        s = self.sessions[session]
        seq = s.tokens + [d.token for d in s.chain]
        feed = seq[s.cache.get_seq_length():]
        new = []
        for _ in range(k):
            out = self.model(input_ids=torch.tensor([feed], device=self.device), past_key_values=s.cache, use_cache=True)
            row = out.logits[0, -1].float()
            if s.sampling.greedy:
                probs = torch.softmax(row, dim=0)
                top = int(probs.argmax())
                d = DraftToken(top, confidence=float(probs[top]))
            else:
                rng = position_rng(s.sampling.seed, session, len(seq) + len(new))
                d = sample_draft_token(softmax(row.double().cpu().numpy(), s.sampling.temperature), s.sampling, rng)
            new.append(d)
            feed = [d.token]
        s.chain += new
        return new

    def commit(self, session: str, accepted: int, token: int, window: int) -> int:
        s = self.sessions[session]
        window_tokens = s.chain[:window]
        beyond = s.chain[window:]
        base = len(s.tokens)
        s.tokens += [d.token for d in window_tokens[:accepted]] + [token]
        if accepted == window and beyond and beyond[0].token == token:
            s.chain = beyond[1:]       # proactive hit: the drafts made on that assumption stand, cache and all
            return len(s.chain)
        s.chain = []
        drop = s.cache.get_seq_length() - (base + accepted)
        if drop > 0:
            s.cache.crop(-drop)
        return 0

    def chain(self, session: str) -> list[DraftToken]:
        return list(self.sessions[session].chain)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)
