"""BERT's masked-LM corruption (Devlin et al. 2019).

Each non-special token is chosen independently with probability `rate` (15%). Of the chosen: 80% become
[MASK], 10% a random non-special token, 10% stay as they are. Labels hold the original id at chosen
positions and -100 elsewhere, so the loss counts chosen positions only. Randomness comes from the given
generator, so a batch's corruption is a pure function of its seed.
"""

import torch


def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, special_ids: torch.Tensor, vocab_size: int,
                rate: float = 0.15, generator: torch.Generator | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted input_ids, labels) for a (B, T) batch; special_ids (S,) are never chosen nor drawn."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"MLM mask rate must be in (0, 1), got {rate}")
    dev = input_ids.device

    def uniform():
        return torch.rand(input_ids.shape, generator=generator, device=dev)

    eligible = ~torch.isin(input_ids, special_ids.to(dev))
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    chosen = (uniform() < rate) & eligible
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    u = uniform()
    to_mask, to_random = chosen & (u < 0.8), chosen & (u >= 0.8) & (u < 0.9)
    normal = torch.ones(vocab_size, device=dev)
    normal[special_ids.to(dev)] = 0.0
    random_ids = torch.multinomial(normal, input_ids.numel(), replacement=True, generator=generator)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    out = torch.where(to_random, random_ids.view_as(input_ids), out)
    return out, labels
