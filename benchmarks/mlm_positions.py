"""Why the BERT encoder takes RoPE: how fast masked-LM learns to read its neighbours, with learned absolute
positions and with rotary ones, tinylm's BERT beside its `transformers` peers (BertForMaskedLM, RoFormerForMaskedLM).

The task needs context and nothing else: sequences x_t = 8 + (s + t) mod 504 from a random start s (vocab
512, 64 tokens), masked as the encoder stage masks (15%, 80/10/10; tinylm.data.masking); a masked token is
its left neighbour + 1, while the unigram answer is 1 in 504. Every model: 2 layers x 128, 4 heads, MLP 512,
no dropout, AdamW at 1e-3, batch 32, 300 steps, seed 0; the masked-token loss (nats) every 100 steps.

    python benchmarks/mlm_positions.py      # about 2 minutes on 2 cores
"""

import torch
from transformers import BertConfig, BertForMaskedLM, RoFormerConfig, RoFormerForMaskedLM

from tinylm.data.masking import mask_tokens
from tinylm.models import build_model, presets

V, T, B, STEPS = 512, 64, 32, 300
SIZES = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
             max_position_embeddings=T, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def models() -> dict:
    tiny = dict(vocab_size=V, n_layer=2, n_head=4, n_embd=128, block_size=T)
    return {
        "tinylm BERT, learned": lambda: build_model(presets("bert", **tiny)),
        "transformers BertForMaskedLM": lambda: BertForMaskedLM(BertConfig(vocab_size=V, **SIZES)),
        "tinylm BERT, rope": lambda: build_model(presets("bert", position="rope", **tiny)),
        "transformers RoFormerForMaskedLM": lambda: RoFormerForMaskedLM(
            RoFormerConfig(vocab_size=V, embedding_size=128, **SIZES)),
    }


def run(make) -> list[float]:
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(1, STEPS + 1):
        x = 8 + (torch.randint(0, V - 8, (B, 1)) + torch.arange(T)) % (V - 8)  # (B, T)
        inputs, labels = mask_tokens(x, mask_token_id=7, special_ids=torch.arange(8), vocab_size=V)
        out = model(inputs)
        logits = out if torch.is_tensor(out) else out.logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            losses.append(loss.item())
    return losses


def main() -> None:
    torch.set_num_threads(2)
    print("| model | loss @100 | @200 | @300 |\n| --- | ---: | ---: | ---: |")
    for name, make in models().items():
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in run(make)) + " |", flush=True)


if __name__ == "__main__":
    main()
