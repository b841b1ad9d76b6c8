"""One training epoch of the FT-Transformer: plain soft-label cross-entropy, or DivideMix-style.

DivideMix (Li, Socher, Hoi 2020, https://arxiv.org/abs/2002.07394) with one network: a 2-component GMM
on per-row losses splits clean from noisy rows; clean labels are refined with the model's own guess,
noisy ones replaced by its sharpened guess; rows are mixed (MixUp on the feature tokens).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn
from torch.nn import functional as F

from verticals.serval._ft_transformer import FTTransformer

LAMBDA_U = 1.0  # weight of the MSE on the noisy ("unlabelled") rows, as the clean rows' BCE has weight 1
MIXUP_ALPHA = 4.0  # lambda ~ Beta(4, 4), DivideMix's value for moderate noise
SHARPEN_T = 0.5

Data = tuple[torch.Tensor, torch.Tensor]  # numeric features, categorical codes


def plain_epoch(module: nn.Module, optimizer: torch.optim.Optimizer, data: Data, y: torch.Tensor,
                batches: Sequence[torch.Tensor]) -> float:
    """One epoch of soft-label binary cross-entropy; returns the mean batch loss."""
    module.train()
    losses = []
    for batch in batches:
        loss = F.binary_cross_entropy_with_logits(module(data[0][batch], data[1][batch]), y[batch])
        losses.append(step(optimizer, loss))
    return float(np.mean(losses))


def clean_posterior(logits: torch.Tensor, target: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """DivideMix's co-divide with one network: posterior of the low-loss component of a 2-GMM on losses.

    The loss is the KL divergence from the soft label (cross-entropy minus the label's entropy), so an
    honest 0.6 label that the model matches is not taken for noise merely because it is uncertain.
    """
    clamped = target.clamp(1e-6, 1 - 1e-6)
    entropy = -(clamped * clamped.log() + (1 - clamped) * (1 - clamped).log())
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = (cross_entropy - entropy).double().cpu().numpy()
    loss = (loss - loss.min()) / max(loss.max() - loss.min(), 1e-12)
    gmm = GaussianMixture(2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=int(rng.integers(2**31)))
    with warnings.catch_warnings():  # 10 EM steps are DivideMix's setting, converged or not
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(loss[:, None])
    posterior = gmm.predict_proba(loss[:, None])[:, int(gmm.means_.argmin())]
    return torch.as_tensor(posterior, dtype=torch.float32, device=target.device)


def mix_epoch(module: FTTransformer, optimizer: torch.optim.Optimizer, data: Data, y: torch.Tensor,
              rows: torch.Tensor, clean: torch.Tensor, batches: Sequence[torch.Tensor], generator: torch.Generator,
              rng: np.random.Generator) -> float:
    """One DivideMix epoch: refine clean labels, guess noisy ones, MixUp tokens, BCE + LAMBDA_U * MSE.

    `clean` is the clean posterior of each of `rows`; `batches` split those rows.
    """
    weight = torch.zeros_like(y)
    weight[rows] = clean
    prior = y[rows].mean().clamp(1e-3, 1 - 1e-3)
    losses = []
    module.train()
    for batch in batches:
        x_num, x_cat, w = data[0][batch], data[1][batch], weight[batch]
        with torch.no_grad():  # two dropout-on passes, averaged
            p = (torch.sigmoid(module(x_num, x_cat)) + torch.sigmoid(module(x_num, x_cat))) / 2
        is_clean = w > 0.5
        target = torch.where(is_clean, w * y[batch] + (1 - w) * p, sharpen(p, SHARPEN_T))
        lam = float(rng.beta(MIXUP_ALPHA, MIXUP_ALPHA))
        lam = max(lam, 1 - lam)  # each mixed row stays closest to its own row, so its clean/noisy role holds
        partner = torch.randperm(len(batch), generator=generator)
        tokens = module.tokenizer(x_num, x_cat)
        logits = module.from_tokens(lam * tokens + (1 - lam) * tokens[partner])
        mixed = lam * target + (1 - lam) * target[partner]
        # DivideMix's prior penalty keeps the mean prediction at the labels' class balance; without it the
        # guesses for noisy rows drift to the majority class and the model collapses onto it (measured).
        mean = torch.sigmoid(logits).mean().clamp(1e-6, 1 - 1e-6)
        loss = prior * (prior / mean).log() + (1 - prior) * ((1 - prior) / (1 - mean)).log()
        if is_clean.any():
            loss = loss + F.binary_cross_entropy_with_logits(logits[is_clean], mixed[is_clean])
        if (~is_clean).any():
            loss = loss + LAMBDA_U * F.mse_loss(torch.sigmoid(logits[~is_clean]), mixed[~is_clean])
        losses.append(step(optimizer, loss))
    return float(np.mean(losses))


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """Binary temperature sharpening: p^(1/T) / (p^(1/T) + (1-p)^(1/T))."""
    a, b = p.pow(1 / temperature), (1 - p).pow(1 / temperature)
    return a / (a + b)


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
