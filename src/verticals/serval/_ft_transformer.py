"""FT-Transformer: every feature becomes a token, a [CLS] token reads them all through self-attention.

Gorishniy, Rubachev, Khrulkov, Babenko (2021), "Revisiting Deep Learning Models for Tabular Data",
https://arxiv.org/abs/2106.11959. Written for binary classification (one logit) on small tables and a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FeatureTokenizer(nn.Module):
    """Numeric feature j -> x_j * W_j + b_j; categorical feature j -> E_j[code] + b_j; a [CLS] token first."""

    offsets: torch.Tensor  # a buffer (register_buffer below)

    def __init__(self, n_numeric: int, cardinalities: Sequence[int], d_token: int) -> None:
        super().__init__()
        self.numeric_weight = nn.Parameter(torch.empty(n_numeric, d_token))
        self.numeric_bias = nn.Parameter(torch.empty(n_numeric, d_token))
        # One table for all categorical features; feature j's codes start at offsets[j].
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets[: len(cardinalities)], persistent=False)
        self.category_embedding = nn.Embedding(max(sum(cardinalities), 1), d_token)
        self.category_bias = nn.Parameter(torch.empty(len(cardinalities), d_token))
        self.cls = nn.Parameter(torch.empty(d_token))
        # The paper's (rtdl) initialisation: uniform in +-1/sqrt(d_token).
        bound = d_token**-0.5
        for p in (self.numeric_weight, self.numeric_bias, self.category_embedding.weight, self.category_bias, self.cls):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """(batch, n_numeric) floats and (batch, n_categorical) codes -> (batch, 1 + n_features, d_token)."""
        tokens = [self.cls.expand(x_num.shape[0], 1, -1)]
        if self.numeric_weight.shape[0]:
            tokens.append(x_num.unsqueeze(-1) * self.numeric_weight + self.numeric_bias)
        if self.category_bias.shape[0]:
            tokens.append(self.category_embedding(x_cat + self.offsets) + self.category_bias)
        return torch.cat(tokens, dim=1)


class ReGLU(nn.Module):
    """Feed-forward part of a block: Linear -> ReGLU (a * relu(b)) -> dropout -> Linear."""

    def __init__(self, d_token: int, ffn_factor: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, int(d_token * ffn_factor))
        self.linear_in = nn.Linear(d_token, 2 * hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear_out = nn.Linear(hidden, d_token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.linear_in(x).chunk(2, dim=-1)
        return self.linear_out(self.dropout(a * torch.relu(b)))


class Block(nn.Module):
    """Pre-norm transformer block. The first block skips its attention norm (the paper does: tokens are fresh)."""

    def __init__(self, d_token: int, n_heads: int, ffn_factor: float, attention_dropout: float,
                 ffn_dropout: float, residual_dropout: float, first: bool) -> None:
        super().__init__()
        self.attention_norm = nn.Identity() if first else nn.LayerNorm(d_token)
        self.attention = nn.MultiheadAttention(d_token, n_heads, dropout=attention_dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d_token)
        self.ffn = ReGLU(d_token, ffn_factor, ffn_dropout)
        self.residual_dropout = nn.Dropout(residual_dropout)

    def forward(self, x: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """`cls_only`: only the [CLS] token queries (enough in the last block, as only it reaches the head)."""
        h = self.attention_norm(x)
        query = h[:, :1] if cls_only else h
        x = (x[:, :1] if cls_only else x) + self.residual_dropout(self.attention(query, h, h, need_weights=False)[0])
        return x + self.residual_dropout(self.ffn(self.ffn_norm(x)))


class FTTransformer(nn.Module):
    """Feature tokenizer, `n_blocks` transformer blocks, head on [CLS] -> one logit (of the positive class)."""

    def __init__(self, n_numeric: int, cardinalities: Sequence[int], d_token: int = 64, n_blocks: int = 2,
                 n_heads: int = 8, ffn_factor: float = 4 / 3, attention_dropout: float = 0.1,
                 ffn_dropout: float = 0.1, residual_dropout: float = 0.0) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_numeric, cardinalities, d_token)
        self.blocks = nn.ModuleList(
            Block(d_token, n_heads, ffn_factor, attention_dropout, ffn_dropout, residual_dropout, first=i == 0)
            for i in range(n_blocks))
        self.head = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU(), nn.Linear(d_token, 1))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """Logits, shape (batch,)."""
        return self.from_tokens(self.tokenizer(x_num, x_cat))

    def from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits from tokenizer output; MixUp mixes tokens, so categorical features can be mixed too."""
        x = tokens
        for i, block in enumerate(self.blocks):
            x = block(x, cls_only=i == len(self.blocks) - 1)
        return self.head(x[:, 0]).squeeze(-1)
