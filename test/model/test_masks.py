"""The attention masks equal literal matrices written from DV §3.3.1 and Fig. 3c."""

from __future__ import annotations

import torch

from vla_ros.model.masks import TokenKind, attention_mask, coupled_kinds, vla_kinds

P, X, A, E = TokenKind.PROMPT, TokenKind.PAD, TokenKind.ACTION, TokenKind.EXPERT


def _matrix(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row.replace(" ", "")] for row in rows])


def test_shallow_layer_mask_is_causal_prompt_and_bidirectional_actions():
    """Kills: actions that are causal among themselves, prompt tokens that see actions, attended padding."""
    # columns: p0 p1 p2 pad a0 a1
    kinds = vla_kinds(torch.tensor([[True, True, True, False]]), use_proprio=False, horizon=2)
    assert kinds.tolist() == [[P, P, P, X, A, A]]
    expected = _matrix([
        "100 000",  # p0: itself
        "110 000",  # p1: causal
        "111 000",  # p2: causal, never an action
        "000 100",  # pad: only itself (keeps the softmax row finite), seen by nobody
        "111 011",  # a0: whole prompt and every action
        "111 011",  # a1
    ])
    assert torch.equal(attention_mask(kinds)[0], expected)


def test_coupled_layer_mask_matches_fig_3c():
    """Kills: expert rows that see VLA tokens, prompt or action rows that miss expert columns."""
    # columns: e0 e1 | p0 p1 p2 pad a0 a1 ; expert tokens first
    vla = vla_kinds(torch.tensor([[True, True, True, False]]), use_proprio=False, horizon=2)
    kinds = coupled_kinds(vla, num_expert_tokens=2)
    assert kinds.tolist() == [[E, E, P, P, P, X, A, A]]
    cameras = torch.tensor([0, 0, -1, -1, -1, -1, -1, -1])
    expected = _matrix([
        "11 000000",  # e0: expert tokens only, bidirectional
        "11 000000",  # e1
        "11 100000",  # p0: all expert tokens + causal prompt
        "11 110000",  # p1
        "11 111000",  # p2
        "00 000100",  # pad
        "11 111011",  # a0: everything but padding
        "11 111011",  # a1
    ])
    assert torch.equal(attention_mask(kinds, cameras)[0], expected)


def test_expert_tokens_of_different_cameras_do_not_attend_to_each_other():
    """Kills: expert tokens of one camera attending to another camera's (DINO saw one image at a time)."""
    vla = vla_kinds(torch.tensor([[True]]), use_proprio=False, horizon=1)
    kinds = coupled_kinds(vla, num_expert_tokens=4)
    cameras = torch.tensor([0, 0, 1, 1, -1, -1])
    expected = _matrix([
        "1100 00",
        "1100 00",
        "0011 00",
        "0011 00",
        "1111 10",  # prompt sees every camera's expert tokens
        "1111 11",
    ])
    assert torch.equal(attention_mask(kinds, cameras)[0], expected)


def test_proprio_token_is_a_prompt_token_after_the_padding():
    """Kills: a proprio token placed before the padding or treated as an action."""
    kinds = vla_kinds(torch.tensor([[True, False]]), use_proprio=True, horizon=1)
    assert kinds.tolist() == [[P, X, P, A]]
    expected = _matrix(["1000", "0100", "1010", "1011"])
    assert torch.equal(attention_mask(kinds)[0], expected)


def test_masks_differ_per_sample_with_padding():
    """Kills: one mask broadcast over the batch, so a short instruction's padding is attended."""
    kinds = vla_kinds(torch.tensor([[True, True], [True, False]]), use_proprio=False, horizon=1)
    mask = attention_mask(kinds)
    assert mask.shape == (2, 3, 3)
    assert mask[0, 2].tolist() == [True, True, True]
    assert mask[1, 2].tolist() == [True, False, True]
