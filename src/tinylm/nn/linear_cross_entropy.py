"""The output layer and the cross-entropy loss in one pass, chunk by chunk, never holding all the logits.

    loss = sum_t w_t * CE_eps(x_t W^T, y_t),   CE_eps(z, y) = (1 - eps) (lse(z) - z_y) + eps (lse(z) - mean_c z_c)

(the label-smoothed cross-entropy of `tinylm.training.losses`; targets y_t = -100 are ignored, whatever
their weight). Its gradient with respect to the logits is known in closed form,

    dloss / dz_t = w_t * (softmax(z_t) - (1 - eps) onehot(y_t) - eps / V),

so the forward pass computes, for each chunk of rows, the logits, the loss, that gradient, and from it
dx = g W and dW += g^T x, then drops the chunk's logits: the (N, V) logits, their log-softmax and the
gradient of each are never materialised, and each chunk's (chunk, V) block stays in the CPU cache between
the matmul that makes it and the ones that consume it. The backward pass only scales the saved dx, dW by
the incoming gradient. The default GPT's CPU forward + backward ran 1.13-1.21x faster than logits +
`F.cross_entropy` (chunks of 64-1024 rows were within 7% of each other; 256 was best); the idea is Liger
Kernel's fused linear cross-entropy. Matmuls run in the autocast dtype when autocast is on, the softmax
in at least float32.
"""

import torch

CHUNK_ROWS = {"cpu": 256, "cuda": 4096}  # rows per chunk: the CPU wants cache-sized blocks (256 measured best
# of 64-1024), a GPU wants few launches (GPT-2 124M on an H200: 4096 rows 54.9 ms/step, 256 rows 75.6 ms)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         weights: torch.Tensor | None = None, smoothing: float = 0.0,
                         chunk_size: int | None = None) -> torch.Tensor:
    """x (N, C) hidden states, weight (V, C) output layer, targets (N,) with -100 = ignored, weights (N,)
    (default: 1 / the number of non-ignored targets, i.e. their mean) -> the scalar loss above.
    chunk_size: rows per chunk (default: CHUNK_ROWS of x's device type, else 1024)."""
    if x.dim() != 2 or targets.shape != x.shape[:1]:
        raise ValueError(f"x must be (N, C) and targets (N,), got {tuple(x.shape)} and {tuple(targets.shape)}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    device = x.device.type
    chunk_size = chunk_size or CHUNK_ROWS.get(device, 1024)
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    if weights is None:
        valid = (targets != -100).to(torch.promote_types(x.dtype, torch.float32))
        weights = valid / valid.sum().clamp(min=1)
    grads = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return fused_linear_cross_entropy(x, weight, targets, weights, smoothing, chunk_size, dtype, grads)[0]


@torch.library.custom_op("tinylm::linear_cross_entropy", mutates_args=())
def fused_linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                               smoothing: float, chunk_size: int, dtype: torch.dtype,
                               grads: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, dloss/dx, dloss/dweight) with the matmuls in `dtype`; the gradients are empty when not `grads`.

    A custom operator, opaque to torch.compile: the chunk loop's in-place writes run eagerly inside it, and
    autograd sees one node whose backward scales the saved gradients (compiled equals eager by construction;
    as a plain autograd.Function traced by torch.compile on CUDA it once gave every parameter a zero gradient).
    """
    with torch.autocast(x.device.type, enabled=False):
        loss, grad_x, grad_w = _chunks(x, weight, targets, weights, smoothing, chunk_size, dtype, grads)
    if not grads:
        grad_x, grad_w = x.new_empty(0), weight.new_empty(0)
    return loss, grad_x, grad_w


@fused_linear_cross_entropy.register_fake
def _(x, weight, targets, weights, smoothing, chunk_size, dtype, grads):
    loss = x.new_empty((), dtype=torch.promote_types(dtype, torch.float32))
    if not grads:
        return loss, x.new_empty(0), weight.new_empty(0)
    return loss, torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])


def _backward(ctx, grad_loss, _grad_x, _grad_w):
    grad_x, grad_w = ctx.saved_tensors
    return grad_x * grad_loss, grad_w * grad_loss, None, None, None, None, None, None


fused_linear_cross_entropy.register_autograd(_backward, setup_context=_setup_context)


def _chunks(x, weight, targets, weights, smoothing, chunk_size, dtype, grads: bool):
    acc = torch.promote_types(dtype, torch.float32)  # softmax, loss and dW accumulate in at least float32
    w = weight.to(dtype)
    weights = weights.to(acc) * (targets != -100)
    loss = torch.zeros((), dtype=acc, device=x.device)
    grad_x = torch.empty_like(x) if grads else None
    grad_w = torch.zeros_like(weight, dtype=acc) if grads else None
    for s in range(0, x.size(0), chunk_size):
        xc, wc = x[s:s + chunk_size].to(dtype), weights[s:s + chunk_size]
        y = targets[s:s + chunk_size].clamp(min=0)[:, None]  # ignored rows weigh 0: any class will do
        z = (xc @ w.t()).to(acc)  # (c, V)
        lse = torch.logsumexp(z, dim=-1)
        per_row = lse - z.gather(1, y).squeeze(1)
        if smoothing:
            per_row = (1 - smoothing) * per_row + smoothing * (lse - z.mean(-1))
        loss += (wc * per_row).sum()
        if grads:
            g = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            g.scatter_add_(1, y, torch.full_like(y, smoothing - 1, dtype=g.dtype))
            if smoothing:
                g.sub_(smoothing / z.size(1))
            g = g.mul_(wc[:, None]).to(dtype)
            grad_x[s:s + chunk_size] = g @ w
            if dtype == acc:
                grad_w.addmm_(g.t(), xc)
            else:
                grad_w += (g.t() @ xc).to(acc)
    return loss, grad_x, grad_w.to(weight.dtype) if grads else None
