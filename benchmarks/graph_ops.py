"""What torch.compile has to work with: the aten ops of a compiled training step's forward and backward graphs,
tinylm's GPT against nanoGPT's model.py (the peer of benchmarks/gpu.py), at GPT-2 124M's layout (12 layers)
with a small width, on the CPU. Same counts mean the model leaves the compiler the same work as nanoGPT's, so a
GPU gap between them lies outside the model (the loss, the optimizer, the training loop), not in its graph.

    python benchmarks/graph_ops.py [--nanogpt ../shared/anchors/nanogpt/model.py] [--n-layer 12]

Rows: tinylm with logits + F.cross_entropy (nanoGPT's loss), tinylm with its fused output layer + loss (the
custom op `tinylm::linear_cross_entropy`, one opaque node), nanoGPT; all under bf16 autocast, dropout 0, the
graphs AOTAutograd hands Inductor. Ops are grouped: matmuls (mm, addmm, bmm), attention, norms, casts
(_to_copy), views (view, t, transpose, permute, ... : free), and the rest.
"""

import argparse
import collections
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from functorch.compile import make_boxed_func
from torch._functorch.aot_autograd import aot_module_simplified

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
GROUPS = {"matmul": ("mm", "addmm", "bmm"), "cast": ("_to_copy",),
          "view": ("view", "_unsafe_view", "t", "transpose", "permute", "unbind", "split", "split_with_sizes",
                   "alias", "detach", "getitem", "expand", "squeeze", "unsqueeze", "slice", "select")}


def group(target) -> str:
    name = str(target).removeprefix("aten.").split(".")[0].split(" ")[-1].rstrip(">")
    if "attention" in name:
        return "attention"
    if "norm" in name and "nll" not in name:
        return "norm"
    return next((g for g, names in GROUPS.items() if name in names), "other")


def graph_ops(step, *args) -> dict[str, collections.Counter]:
    """{"forward": Counter, "backward": Counter} of the aten ops of step(*args) compiled, then backpropagated."""
    found = {}

    def record(phase):
        def compiler(gm, _):
            found[phase] = collections.Counter(group(n.target) for n in gm.graph.nodes if n.op == "call_function")
            return make_boxed_func(gm.forward)
        return compiler

    def backend(gm, example):
        return aot_module_simplified(gm, example, fw_compiler=record("forward"), bw_compiler=record("backward"))

    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.compile(step, backend=backend, fullgraph=True)(*args)
    loss.backward()
    return found


def main() -> None:
    from tinylm.models import build_model, presets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanogpt", type=Path, default=ROOT.parent / "shared" / "anchors" / "nanogpt" / "model.py")
    p.add_argument("--n-layer", type=int, default=12)
    a = p.parse_args()
    if not a.nanogpt.exists():
        sys.exit(f"nanoGPT's model.py not found at {a.nanogpt}: pass --nanogpt")
    spec = importlib.util.spec_from_file_location("nanogpt_model", a.nanogpt)
    nanogpt = sys.modules["nanogpt_model"] = importlib.util.module_from_spec(spec)  # dynamo re-imports it by name
    spec.loader.exec_module(nanogpt)
    shape = dict(n_layer=a.n_layer, n_head=4, n_embd=128, block_size=128, vocab_size=1024)
    torch.manual_seed(0)
    x, y = torch.randint(0, shape["vocab_size"], (2, 2, 128))
    tinylm = build_model(presets("gpt2", **shape, dropout=0.0))
    nano = nanogpt.GPT(nanogpt.GPTConfig(**shape, dropout=0.0, bias=True))
    rows = {"tinylm, logits + F.cross_entropy": graph_ops(
                lambda x, y: F.cross_entropy(tinylm(x).flatten(0, 1).float(), y.flatten()), x, y),
            "tinylm, fused output layer + loss": graph_ops(lambda x, y: tinylm(x, targets=y), x, y),
            "nanoGPT model.py": graph_ops(lambda x, y: nano(x, y)[1], x, y)}
    cols = ("matmul", "attention", "norm", "cast", "other", "view")
    print(f"{a.n_layer} layers, torch {torch.__version__}: aten ops per graph, forward / backward\n")
    print("| model | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
    for label, found in rows.items():
        print(f"| {label} | " + " | ".join(f"{found['forward'][c]} / {found['backward'][c]}" for c in cols) + " |")


if __name__ == "__main__":
    main()
