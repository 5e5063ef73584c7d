"""GPT-2 / BERT initialisation: weights ~ N(0, 0.02), biases 0, norms 1; residual output projections
(c_proj, down_proj) ~ N(0, 0.02 / sqrt(2 n_layer)) so the residual stream's variance does not grow with depth.
"""

import math

from torch import nn

from tinylm.nn.norms import LayerNorm, RMSNorm


def init_weights(model: nn.Module, n_layer: int, std: float = 0.02) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            scaled = name.endswith(("attn.c_proj", "mlp.c_proj", "down_proj"))
            nn.init.normal_(module.weight, 0.0, std / math.sqrt(2 * n_layer) if scaled else std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, (LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
