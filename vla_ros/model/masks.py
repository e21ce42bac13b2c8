"""Attention masks from token groups and one rule table (DV §3.3.1 and Fig. 3c).

Masks are boolean, True = the query row may attend to the key column, shaped (B, L, L) for SDPA.
"""

from __future__ import annotations

import enum
import functools

import torch


class TokenKind(enum.IntEnum):
    PAD = 0  # instruction padding up to the bucket length; attended by nobody
    PROMPT = 1  # visual, text and (optional) proprio tokens of the VLA
    ACTION = 2  # H action queries with zero input embeddings
    EXPERT = 3  # kept DINOv3 tokens in a coupled layer


class Rule(enum.IntEnum):
    NEVER = 0
    ALWAYS = 1
    CAUSAL = 2  # key index <= query index
    SAME_CAMERA = 3  # expert tokens of the same camera: DINO saw one image at a time


_K = TokenKind
# RULES[query kind][key kind]. Prompt is causal to preserve pretrained Qwen3-VL behaviour; actions are
# bidirectional among themselves and see the whole prompt [S DV §3.3.1]. Expert tokens see only expert
# tokens; VLA prompt tokens see all expert tokens; action tokens see everything [S DV Fig. 3c].
RULES: dict[TokenKind, dict[TokenKind, Rule]] = {
    _K.PAD: {_K.PAD: Rule.NEVER, _K.PROMPT: Rule.NEVER, _K.ACTION: Rule.NEVER, _K.EXPERT: Rule.NEVER},
    _K.PROMPT: {_K.PAD: Rule.NEVER, _K.PROMPT: Rule.CAUSAL, _K.ACTION: Rule.NEVER, _K.EXPERT: Rule.ALWAYS},
    _K.ACTION: {_K.PAD: Rule.NEVER, _K.PROMPT: Rule.ALWAYS, _K.ACTION: Rule.ALWAYS, _K.EXPERT: Rule.ALWAYS},
    _K.EXPERT: {_K.PAD: Rule.NEVER, _K.PROMPT: Rule.NEVER, _K.ACTION: Rule.NEVER, _K.EXPERT: Rule.SAME_CAMERA},
}


@functools.lru_cache(maxsize=8)  # one host-to-device copy per device, not one per forward
def _rule_table(device: torch.device) -> torch.Tensor:
    table = torch.zeros(len(TokenKind), len(TokenKind), dtype=torch.long)
    for q, row in RULES.items():
        for k, rule in row.items():
            table[q, k] = rule
    return table.to(device)


def attention_mask(kinds: torch.Tensor, cameras: torch.Tensor | None = None) -> torch.Tensor:
    """kinds (B, L) TokenKind values; cameras (L,) camera index of each expert token (others ignored).

    Returns (B, L, L) bool. A PAD row attends to itself only, so no softmax row is empty (SDPA would give NaN).
    """
    batch, length = kinds.shape
    rules = _rule_table(kinds.device)[kinds[:, :, None], kinds[:, None, :]]  # (B, L, L)
    index = torch.arange(length, device=kinds.device)
    causal = index[None, :] <= index[:, None]  # (L, L)
    if cameras is None:
        cameras = torch.zeros(length, dtype=torch.long, device=kinds.device)
    same_camera = cameras[:, None] == cameras[None, :]
    mask = (rules == Rule.ALWAYS) | ((rules == Rule.CAUSAL) & causal) | ((rules == Rule.SAME_CAMERA) & same_camera)
    # index == index rather than torch.eye(dtype=bool): ONNX Runtime has no boolean EyeLike kernel.
    pad_self = (kinds == TokenKind.PAD)[:, :, None] & (index[:, None] == index[None, :])
    return mask | pad_self


def vla_kinds(prompt_valid: torch.Tensor, use_proprio: bool, horizon: int) -> torch.Tensor:
    """Token kinds of the VLA sequence [prompt (valid then PAD); proprio?; H actions].

    prompt_valid: (B, Np) bool -> (B, N) long with N = Np + use_proprio + H.
    """
    batch = prompt_valid.shape[0]
    prompt = torch.where(prompt_valid, int(TokenKind.PROMPT), int(TokenKind.PAD))
    parts = [prompt]
    if use_proprio:
        parts.append(prompt.new_full((batch, 1), int(TokenKind.PROMPT)))
    parts.append(prompt.new_full((batch, horizon), int(TokenKind.ACTION)))
    return torch.cat(parts, dim=1)


def coupled_kinds(vla: torch.Tensor, num_expert_tokens: int) -> torch.Tensor:
    """Kinds of the shared-attention sequence, expert tokens first (as in Fig. 3c): (B, M + N)."""
    expert = vla.new_full((vla.shape[0], num_expert_tokens), int(TokenKind.EXPERT))
    return torch.cat([expert, vla], dim=1)
