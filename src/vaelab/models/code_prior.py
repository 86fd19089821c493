"""A learned prior over a VQ-VAE's grid of discrete codes (``[model.code_prior]``): a small
causal transformer reads the codes in raster order and gives each position a categorical
distribution over the K codebook entries given the ones before it, so

    log p(codes) = Σ_t log p(code_t | code_<t [, label]),

in nats per image. A class-conditional prior starts each sequence with its label's token
(an unconditional one with a shared start token). Sampling draws the positions one after
another, with a temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config import CodePriorConfig


class CodeTransformer(nn.Module):
    """p(code_t | code_<t, label) for sequences of ``length`` codes of ``entries`` values."""

    def __init__(self, options: CodePriorConfig, entries: int, length: int, labels: int = 0):
        super().__init__()
        if options.width % options.heads:
            raise ValueError(f"code_prior.width {options.width} is not divisible by heads "
                             f"{options.heads}")  # fmt: skip
        w = options.width
        self.entries, self.length = entries, length
        self.token = nn.Embedding(entries, w)
        self.start = nn.Embedding(max(labels, 1), w)  # one start token per label (or one)
        self.position = nn.Parameter(torch.randn(length, w) * 0.02)
        block = nn.TransformerEncoderLayer(w, options.heads, 4 * w, dropout=0.0,
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(block, options.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, entries)
        mask = torch.triu(torch.full((length, length), float("-inf")), diagonal=1)
        self.register_buffer("causal", mask, persistent=False)

    def logits(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, T, K) of each position given the codes before it; codes (B, T) long."""
        b = codes.shape[0]
        first = self.start(labels if labels is not None else codes.new_zeros(b))  # (B, W)
        h = torch.cat([first[:, None], self.token(codes[:, :-1])], dim=1)  # (B, T, W) shifted
        h = self.blocks(h + self.position, mask=self.causal, is_causal=True)
        return self.head(self.norm(h))  # (B, T, W) -> (B, T, K)

    def log_prob(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(codes) per sequence, (B,) in nats."""
        logp = F.log_softmax(self.logits(codes, labels).float(), dim=-1)  # (B, T, K)
        return logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator=None,
               temperature: float = 1.0) -> Tensor:  # fmt: skip
        """n code sequences (n, T), drawn position by position."""
        device = self.position.device
        codes = torch.zeros(n, self.length, dtype=torch.long, device=device)
        for t in range(self.length):
            logits = self.logits(codes, labels)[:, t].float() / max(temperature, 1e-6)  # (n, K)
            probs = torch.softmax(logits, dim=-1)
            codes[:, t] = (
                torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
            )
        return codes


CODE_PRIORS = {"transformer": CodeTransformer}
"""[model.code_prior] kind -> its module, built with (options, entries, length, labels)."""
