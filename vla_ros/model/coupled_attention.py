"""VL-MoT coupling (DV §3.3.2, Eq. 2-4): one expert layer and one LLM layer share a single attention.

The HF layers are passed in at call time and used through their own submodules, so their weights keep
their HF names and nothing is registered twice. Only the aligners and the expert back-projection are new.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.model.backbones import apply_rotary_pos_emb, project_vla_qkv, repeat_kv_heads
from vla_ros.model.configuration import CouplingConfig, ExpertConfig, QwenTextConfig

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B, L, D)


def decoder_layer_forward(layer: nn.Module, hidden: torch.Tensor, rope: Rope, mask: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Qwen3-VL decoder layer with an explicit boolean mask; same math as the HF layer.

    hidden (B, N, C), mask (B, N, N) -> new hidden (B, N, C) plus q (B, Hq, N, D) and k (B, Hkv, N, D), which
    AGVP reads in the shallow layers.
    """
    q, k, v = project_vla_qkv(layer, layer.input_layernorm(hidden), *rope)
    attn = layer.self_attn
    heads = q.shape[1]
    out = F.scaled_dot_product_attention(q, repeat_kv_heads(k, heads), repeat_kv_heads(v, heads),
                                         attn_mask=mask[:, None], scale=attn.scaling)
    hidden = hidden + attn.o_proj(out.transpose(1, 2).flatten(2))
    hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return hidden, q, k


class ExpertAligner(nn.Module):
    """Linear + LayerNorm from the expert width into the LLM's head layout (DV Fig. 3b "Aligner")."""

    def __init__(self, in_dim: int, out_dim: int, norm_position: str) -> None:
        super().__init__()
        self.norm_first = norm_position == "before"
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(in_dim if self.norm_first else out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x)) if self.norm_first else self.norm(self.proj(x))


class CoupledLayerPair(nn.Module):
    """New parameters of one coupled (expert layer, LLM layer) pair, and the shared-attention step.

    Query aligner and back-projection exist only if this pair updates the expert stream: the last pair's
    expert output would never be read, so it is not computed.
    """

    def __init__(self, text: QwenTextConfig, expert: ExpertConfig, coupling: CouplingConfig,
                 has_expert_update: bool) -> None:
        super().__init__()
        q_dim, kv_dim = text.num_heads * text.head_dim, text.num_kv_heads * text.head_dim
        norm = coupling.aligner_norm_position
        self.head_dim = text.head_dim
        self.use_dino_o_proj = coupling.expert_output == "back_projection"
        self.align_k = ExpertAligner(expert.hidden_size, kv_dim, norm)
        self.align_v = ExpertAligner(expert.hidden_size, kv_dim, norm)
        self.align_q = ExpertAligner(expert.hidden_size, q_dim, norm) if has_expert_update else None
        self.expert_out = nn.Linear(q_dim, expert.hidden_size) if has_expert_update else None

    def forward(self, llm_layer: nn.Module, expert_layer: nn.Module, z: torch.Tensor, e: torch.Tensor,
                vla_rope: Rope, expert_rope: Rope | None, mask: torch.Tensor, update_expert: bool
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z (B, N, C) VLA stream, e (B, M, C_e) kept expert tokens, mask (B, M+N, M+N) expert-first.

        Returns the new z and, if update_expert, the new e (else None).
        """
        batch, num_expert, _ = e.shape
        q_z, k_z, v_z = project_vla_qkv(llm_layer, llm_layer.input_layernorm(z), *vla_rope)

        dino_attn = expert_layer.attention
        e_normed = expert_layer.norm1(e)
        k_e = self._heads(self.align_k(dino_attn.k_proj(e_normed)))  # (B, Hkv, M, D)
        v_e = self._heads(self.align_v(dino_attn.v_proj(e_normed)))
        q_e = self._heads(self.align_q(dino_attn.q_proj(e_normed))) if update_expert else None  # (B, Hq, M, D)
        if expert_rope is not None:  # Qwen's RoPE at the expert tokens' own positions (deepvision_vla.md §5.4)
            q_rotated, k_e = apply_rotary_pos_emb(k_e if q_e is None else q_e, k_e, *expert_rope)
            q_e = None if q_e is None else q_rotated

        keys, values = torch.cat([k_e, k_z], dim=2), torch.cat([v_e, v_z], dim=2)
        queries = torch.cat([q_e, q_z], dim=2) if update_expert else q_z
        rows = mask if update_expert else mask[:, num_expert:]
        heads = queries.shape[1]
        out = F.scaled_dot_product_attention(queries, repeat_kv_heads(keys, heads), repeat_kv_heads(values, heads),
                                             attn_mask=rows[:, None], scale=llm_layer.self_attn.scaling)
        out = out.transpose(1, 2).flatten(2)  # (B, rows, Hq * D)
        out_e, out_z = out[:, : out.shape[1] - z.shape[1]], out[:, out.shape[1] - z.shape[1]:]

        z = z + llm_layer.self_attn.o_proj(out_z)
        z = z + llm_layer.mlp(llm_layer.post_attention_layernorm(z))
        if not update_expert:
            return z, None
        update = self.expert_out(out_e)
        if self.use_dino_o_proj:
            update = dino_attn.o_proj(update)
        e = e + expert_layer.layer_scale1(update)
        e = e + expert_layer.layer_scale2(expert_layer.mlp(expert_layer.norm2(e)))
        return z, e

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, heads * D) -> (B, heads, M, D)."""
        return x.view(*x.shape[:2], -1, self.head_dim).transpose(1, 2)

