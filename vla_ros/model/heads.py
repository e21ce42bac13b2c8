"""Action heads, pluggable by name: how the VLM's tokens become an action chunk.

Each head decides which query tokens ride at the end of the VLA sequence (they are ACTION tokens in the
attention rules: they see the whole prompt and each other) and reads the VLM's states back:
- oft_mlp (DV §3.3.1, OpenVLA-OFT): H zero action tokens; a two-layer MLP on each one's last hidden state.
- vlm4vla (VLM4VLA §3.1): Q learnable query tokens (default 1); an MLP maps their last hidden states to the
  whole chunk. The VLM is otherwise untouched.
- vla_adapter (VLA-Adapter §2.3): Q learnable ActionQuery tokens (default 64); a policy of one Bridge-Attention
  block per chosen LLM layer reads that layer's ActionQuery states (plus proprio) at full strength and its raw
  vision-language states through a learnable tanh gate that starts closed.
All regress normalised actions with L1 (deepvision_vla.md; VLM4VLA's MSE+BCE is not used [I]).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vla_ros.errors import ConfigError
from vla_ros.model.configuration import HeadConfig, RobotConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}
DEFAULT_QUERY_TOKENS = {"vla_adapter": 64, "vlm4vla": 1}


@dataclasses.dataclass
class HeadInputs:
    """What the VLM hands a head after its last layer."""

    query_hidden: torch.Tensor  # (B, Q, C) final-norm states of the trailing query tokens
    prompt_tokens: torch.Tensor  # (B, N) bool: raw vision-language tokens (PROMPT kind), not padding or queries
    layer_states: tuple[torch.Tensor, ...] | None  # (B, N, C) output of each LLM layer, if the head asked
    state: torch.Tensor | None  # (B, S) normalised proprio, None unless robot.use_proprio


def _activation(config: HeadConfig) -> nn.Module:
    if config.activation not in _ACTIVATIONS:
        raise ConfigError(f"head.activation={config.activation!r}: must be one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[config.activation]()


class ActionHead(nn.Module):
    """Base: L1 loss, zero query embeddings, no per-layer states."""

    needs_layer_states = False

    def __init__(self, num_query_tokens: int) -> None:
        super().__init__()
        self.num_query_tokens = num_query_tokens

    def query_embeddings(self, like: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) input embeddings of the query tokens, dtype and device of `like` (B, N, C)."""
        return like.new_zeros(like.shape[0], self.num_query_tokens, like.shape[-1])

    @staticmethod
    def loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean L1 over (B, H, A) in normalised units; computed in fp32 so bf16 training sees the same number."""
        return (predicted.float() - target.float()).abs().mean()


class ParallelL1Head(ActionHead):
    """Two-layer MLP applied to every action token at once; L1 regression (DV §3.3.1, OpenVLA-OFT)."""

    def __init__(self, hidden_size: int, robot: RobotConfig, config: HeadConfig) -> None:
        super().__init__(robot.chunk_size)
        width = config.hidden_dim or hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden_size, width), _activation(config),
                                 nn.Linear(width, robot.action_dim))

    def forward(self, inputs: HeadInputs) -> torch.Tensor:
        return self.mlp(inputs.query_hidden)  # (B, H, C) -> (B, H, A), normalised units


class LearnedQueries(ActionHead):
    """Query tokens with learnable input embeddings (VLM4VLA's <ActionQuery>, VLA-Adapter's ActionQuery)."""

    def __init__(self, hidden_size: int, num_query_tokens: int) -> None:
        super().__init__(num_query_tokens)
        self.queries = nn.Parameter(torch.randn(num_query_tokens, hidden_size) * 0.02)

    def query_embeddings(self, like: torch.Tensor) -> torch.Tensor:
        return self.queries.to(like.dtype)[None].expand(like.shape[0], -1, -1)


class QueryMLPHead(LearnedQueries):
    """VLM4VLA: the last hidden states of Q query tokens -> MLP -> the whole (H, A) chunk."""

    def __init__(self, hidden_size: int, robot: RobotConfig, config: HeadConfig) -> None:
        super().__init__(hidden_size, config.num_query_tokens or DEFAULT_QUERY_TOKENS["vlm4vla"])
        width = config.hidden_dim or hidden_size
        self.horizon, self.action_dim = robot.chunk_size, robot.action_dim
        self.mlp = nn.Sequential(nn.Linear(self.num_query_tokens * hidden_size, width), _activation(config),
                                 nn.Linear(width, self.horizon * self.action_dim))

    def forward(self, inputs: HeadInputs) -> torch.Tensor:
        flat = inputs.query_hidden.flatten(1)  # (B, Q*C)
        return self.mlp(flat).view(-1, self.horizon, self.action_dim)


class BridgeAttentionBlock(nn.Module):
    """One policy block: the action latent attends to [itself; ActionQuery states; proprio] at full strength
    and to the raw vision-language states scaled by tanh(gate); then an FFN. Both with residuals.

    The gate scales the raw branch's output (the reading of third-party summaries, deepvision_vla.md §2.3)
    rather than its pre-softmax logits (the official code) [I]: at gate 0 the block is then exactly
    ActionQuery-only, which the logit form is not (zero logits still attend uniformly).
    """

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.norm_latent = nn.LayerNorm(width)
        self.norm_query = nn.LayerNorm(width)
        self.norm_raw = nn.LayerNorm(width)
        self.query_attention = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.raw_attention = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(()))  # tanh(0) = 0: raw features enter as training opens the gate
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, latent: torch.Tensor, action_queries: torch.Tensor, raw: torch.Tensor,
                raw_padding: torch.Tensor) -> torch.Tensor:
        """latent (B, H, C); action_queries (B, Q', C) with proprio; raw (B, N, C); raw_padding (B, N) True = ignore."""
        x = self.norm_latent(latent)
        query_keys = torch.cat([x, self.norm_query(action_queries)], dim=1)
        from_queries, _ = self.query_attention(x, query_keys, query_keys, need_weights=False)
        raw_keys = self.norm_raw(raw)
        from_raw, _ = self.raw_attention(x, raw_keys, raw_keys, key_padding_mask=raw_padding, need_weights=False)
        latent = latent + from_queries + torch.tanh(self.gate).to(from_raw.dtype) * from_raw
        return latent + self.ffn(self.norm_ffn(latent))


class BridgeAttentionHead(LearnedQueries):
    """VLA-Adapter: Q ActionQuery tokens through the VLM; a policy with one Bridge-Attention block per chosen
    LLM layer (all by default), block i reading layer i's raw and ActionQuery states; proprio joins the
    ActionQuery group as one projected token; LayerNorm -> Linear to (H, A)."""

    needs_layer_states = True

    def __init__(self, hidden_size: int, robot: RobotConfig, config: HeadConfig, num_layers: int) -> None:
        super().__init__(hidden_size, config.num_query_tokens or DEFAULT_QUERY_TOKENS["vla_adapter"])
        self.layers = tuple(config.bridge_layers) or tuple(range(num_layers))
        if self.layers[-1] >= num_layers:
            raise ConfigError(f"head.bridge_layers={self.layers}: the VLM has {num_layers} layers")
        self.latent = nn.Parameter(torch.randn(robot.chunk_size, hidden_size) * 0.02)
        self.proprio = nn.Linear(robot.state_dim, hidden_size) if robot.use_proprio else None
        self.blocks = nn.ModuleList(BridgeAttentionBlock(hidden_size, config.bridge_num_heads) for _ in self.layers)
        self.out = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, robot.action_dim))

    def forward(self, inputs: HeadInputs) -> torch.Tensor:
        states = inputs.layer_states
        if states is None:
            raise ConfigError("vla_adapter head needs the VLM's per-layer hidden states")
        batch = inputs.query_hidden.shape[0]
        latent = self.latent.to(inputs.query_hidden.dtype)[None].expand(batch, -1, -1)
        raw_padding = ~inputs.prompt_tokens
        num_q = self.num_query_tokens
        for block, index in zip(self.blocks, self.layers):
            layer = states[index]
            action_queries = layer[:, -num_q:]
            if self.proprio is not None:
                action_queries = torch.cat([action_queries, self.proprio(inputs.state.to(layer.dtype))[:, None]], 1)
            latent = block(latent, action_queries, layer, raw_padding)
        return self.out(latent)

    def gates(self) -> torch.Tensor:
        """tanh(gate) per block: how much raw vision-language features each block lets in."""
        return torch.tanh(torch.stack([block.gate for block in self.blocks]))


HEADS = {"oft_mlp": ParallelL1Head, "vla_adapter": BridgeAttentionHead, "vlm4vla": QueryMLPHead}


def build_head(config: HeadConfig, hidden_size: int, robot: RobotConfig, num_layers: int) -> ActionHead:
    if config.name not in HEADS:
        raise ConfigError(f"head.name={config.name!r}: must be one of the registered heads {sorted(HEADS)}")
    if config.name == "vla_adapter":
        return BridgeAttentionHead(hidden_size, robot, config, num_layers)
    return HEADS[config.name](hidden_size, robot, config)


def query_token_count(config: HeadConfig, robot: RobotConfig) -> int:
    """Trailing query tokens the VLA sequence carries for this head (static per config)."""
    if config.name == "oft_mlp":
        return robot.chunk_size
    return config.num_query_tokens or DEFAULT_QUERY_TOKENS[config.name]

