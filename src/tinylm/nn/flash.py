"""FlashAttention in plain PyTorch: exact attention, tiled, in O(T) memory (forward and backward).

Attention for one query row i (scale c = 1/sqrt(D), M_ij = 0 where key j is visible, -inf where not):

    s_ij = c q_i . k_j + M_ij,    o_i = sum_j softmax(s_i)_j v_j = (sum_j e^(s_ij - m_i) v_j) / l_i,
    m_i  = max_j s_ij,            l_i = sum_j e^(s_ij - m_i),        LSE_i = m_i + log l_i.

The textbook form builds the whole (Tq, Tk) matrix of s_ij. FlashAttention (Dao et al. 2022, "FlashAttention:
Fast and Memory-Efficient Exact Attention with IO-Awareness"; the loop order is that of FlashAttention-2)
never does: it cuts queries and keys into blocks of `block_size` rows and streams the key blocks past each
query block, keeping three running quantities per query row.

Forward, online softmax. For each query block Q_i, start with m = -inf, l = 0, A = 0 (A is the (block, D)
unnormalised output), and for each key block (K_j, V_j):

    S     = c Q_i K_j^T  (+ mask tile)              a (block, block) tile, the only score matrix that exists
    m'    = max(m, rowmax(S))
    P     = exp(S - m')                               exp with the new running max
    l     = e^(m - m') l + rowsum(P)                  earlier terms were scaled by e^-m, rescale them to e^-m'
    A     = e^(m - m') A + P V_j
    m     = m'

and at the end O_i = A / l, LSE_i = m + log l. This is exact: the rescaling e^(m - m') makes the result the
same as a softmax over the whole row, in any block order. Only O (Tq x D) and LSE (Tq) are kept.

Backward, recomputation. With dO the incoming gradient, the gradients of softmax attention are

    P_ij = exp(s_ij - LSE_i)                          recomputed per tile from the saved LSE: no (Tq, Tk) P
    dV_j = sum_i P_ij dO_i                            dP_ij = dO_i . v_j
    D_i  = sum_j P_ij dP_ij = dO_i . O_i              one number per row, computed once up front
    dS_ij = P_ij (dP_ij - D_i)                        the softmax Jacobian applied to dP
    dQ_i = c sum_j dS_ij k_j,     dK_j = c sum_i dS_ij q_i

so the backward pass walks the same tiles again (key blocks outer, query blocks inner) and is O(T) in
memory too: it keeps q, k, v, O and LSE, not the attention matrix.

Masks. `mask` is boolean (True = attend) and broadcastable to (B, H, Tq, Tk); each tile reads its slice of it
through broadcasting, so a (B, 1, 1, Tk) padding mask stays that size. Causality needs no mask tensor: a
tile's causal mask comes from index arithmetic (key j is visible to query i iff j <= i + offset, offset = 0
for "top_left", Tk - Tq for "bottom_right"), tiles that causality hides completely are skipped, and tiles it
leaves completely visible are not masked at all. A row with no visible key has l = 0 and m = -inf; it gives
O = 0, LSE = -inf and zero gradients (the exponentials use a max of 0 in place of -inf).

Precision: fp16 / bf16 inputs are computed in fp32 (scores, softmax statistics, accumulators, gradients), and
the results are cast back to the input dtype. fp32 and fp64 inputs are computed in their own dtype.

On a GPU this is slow next to a fused kernel: a real FlashAttention keeps a tile in on-chip SRAM, here each
tile step is a handful of PyTorch ops. It shows the algorithm and its memory behaviour exactly.
"""

import math

import torch

__all__ = ["flash_attention"]


def _resolve_causal(causal: bool | str | None) -> str | None:
    """False/None -> None; True -> "top_left"; "top_left"/"bottom_right" as given; anything else raises."""
    if causal is False or causal is None:
        return None
    if causal is True:
        return "top_left"
    if causal in ("top_left", "bottom_right"):
        return causal
    raise ValueError(f"causal must be False, True, 'top_left' or 'bottom_right', got {causal!r}")


def _broadcast_mask(mask: torch.Tensor, full: tuple[int, ...]) -> torch.Tensor:
    """A bool mask (True = attend) that broadcasts to the scores' shape `full`, as a view with len(full) dims
    (leading singletons added, no copy); TypeError / ValueError otherwise."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = attend), got {mask.dtype}")
    try:
        ok = mask.dim() <= len(full) and torch.broadcast_shapes(mask.shape, full) == full
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {full}")
    return mask[(None,) * (len(full) - mask.dim())]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _Tiling:
    """Index arithmetic shared by forward and backward: which tiles exist, and each tile's mask."""

    def __init__(self, tq: int, tk: int, align: str | None, mask: torch.Tensor | None, device):
        self.tq, self.tk = tq, tk
        self.causal = align is not None
        # key j is visible to query i iff j <= i + offset
        self.offset = tk - tq if align == "bottom_right" else 0
        self.mask = mask  # bool, already viewed as (..., Tq or 1, Tk or 1)
        if self.causal:
            self.q_idx = torch.arange(tq, device=device)
            self.k_idx = torch.arange(tk, device=device)

    def key_stop(self, q1: int) -> int:
        """Keys at or past this index are hidden by causality from every query < q1."""
        return min(self.tk, q1 + self.offset) if self.causal else self.tk

    def query_start(self, k0: int) -> int:
        """Queries before this index see no key >= k0 (causality)."""
        return min(self.tq, max(0, k0 - self.offset)) if self.causal else 0

    def tile_mask(self, q0: int, q1: int, k0: int, k1: int) -> torch.Tensor | None:
        """Bool mask of the (q0:q1, k0:k1) tile, broadcastable to (..., q1-q0, k1-k0); None = all visible."""
        out = None
        # the tile is partly hidden by causality iff its last key lies past what its first query may see
        if self.causal and k1 - 1 > q0 + self.offset:
            out = self.k_idx[None, k0:k1] <= self.q_idx[q0:q1, None] + self.offset
        if self.mask is not None:
            m = self.mask
            if m.size(-2) != 1:
                m = m[..., q0:q1, :]
            if m.size(-1) != 1:
                m = m[..., k0:k1]
            out = m if out is None else out & m
        return out


def _flash_forward(q, k, v, tiling: _Tiling, block_size: int):
    """Returns out (..., Tq, Dv) in the compute dtype and lse (..., Tq) in the compute dtype."""
    scale = 1.0 / math.sqrt(q.size(-1))
    ct = _compute_dtype(q.dtype)
    qs = q.to(ct) * scale  # prescaled once: S = qs k^T
    k, v = k.to(ct), v.to(ct)
    lead, tq = q.shape[:-2], q.size(-2)
    out = torch.zeros(*lead, tq, v.size(-1), dtype=ct, device=q.device)
    lse = torch.full((*lead, tq), float("-inf"), dtype=ct, device=q.device)
    for q0 in range(0, tq, block_size):
        q1 = min(q0 + block_size, tq)
        q_blk = qs[..., q0:q1, :]
        m = torch.full((*lead, q1 - q0, 1), float("-inf"), dtype=ct, device=q.device)
        l = torch.zeros_like(m)
        acc = out[..., q0:q1, :]  # a view: accumulate straight into the output
        for k0 in range(0, tiling.key_stop(q1), block_size):
            k1 = min(k0 + block_size, tiling.key_stop(q1))
            s = q_blk @ k[..., k0:k1, :].transpose(-2, -1)  # (..., bq, bk)
            tm = tiling.tile_mask(q0, q1, k0, k1)
            if tm is not None:
                s.masked_fill_(~tm, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            # rows with nothing visible yet keep m = -inf; use 0 there so exp gives 0, not NaN (an unmasked
            # tile has finite scores in every row, so then m_new is finite)
            m_safe = m_new if tm is None else m_new.masked_fill(m_new == float("-inf"), 0.0)
            p = s.sub_(m_safe).exp_()  # in place: s is not needed again
            alpha = (m - m_safe).exp_()  # e^(m - m'); 0 while m is still -inf
            l.mul_(alpha).add_(p.sum(dim=-1, keepdim=True))
            acc.mul_(alpha).add_(p @ v[..., k0:k1, :])
            m = m_new
        empty = l == 0  # no visible key: O = 0, LSE = -inf
        acc.div_(l.masked_fill(empty, 1.0))
        lse[..., q0:q1] = (m + l.log()).squeeze(-1)
    return out, lse


def _flash_backward(q, k, v, out, lse, dout, tiling: _Tiling, block_size: int, needs):
    """Gradients (dq, dk, dv) in the compute dtype; entries not in `needs` are None."""
    scale = 1.0 / math.sqrt(q.size(-1))
    ct = _compute_dtype(q.dtype)
    qs = q.to(ct) * scale
    k, v, dout = k.to(ct), v.to(ct), dout.to(ct)
    tq, tk = q.size(-2), k.size(-2)
    delta = (dout * out.to(ct)).sum(dim=-1, keepdim=True)  # D_i = dO_i . O_i, (..., Tq, 1)
    lse = lse.masked_fill(lse == float("-inf"), 0.0).unsqueeze(-1)  # empty rows: every P_ij is exp(-inf) = 0
    dq = torch.zeros_like(qs) if needs[0] else None
    dk = torch.zeros_like(k) if needs[1] else None
    dv = torch.zeros_like(v) if needs[2] else None
    for k0 in range(0, tk, block_size):
        k1 = min(k0 + block_size, tk)
        k_blk, v_blk = k[..., k0:k1, :], v[..., k0:k1, :]
        dk_blk = None if dk is None else dk[..., k0:k1, :]  # views: accumulate in place
        dv_blk = None if dv is None else dv[..., k0:k1, :]
        for q0 in range(tiling.query_start(k0), tq, block_size):
            q1 = min(q0 + block_size, tq)
            q_blk, do_blk = qs[..., q0:q1, :], dout[..., q0:q1, :]
            s = q_blk @ k_blk.transpose(-2, -1)
            tm = tiling.tile_mask(q0, q1, k0, k1)
            if tm is not None:
                s.masked_fill_(~tm, float("-inf"))
            p = s.sub_(lse[..., q0:q1, :]).exp_()  # P_ij = exp(s_ij - LSE_i)
            if dv_blk is not None:
                dv_blk.add_(p.transpose(-2, -1) @ do_blk)
            if dq is None and dk is None:
                continue
            ds = (do_blk @ v_blk.transpose(-2, -1)).sub_(delta[..., q0:q1, :]).mul_(p)  # P (dP - D)
            if dq is not None:
                dq[..., q0:q1, :].add_(ds @ k_blk)
            if dk_blk is not None:
                dk_blk.add_(ds.transpose(-2, -1) @ q_blk)  # q_blk already carries the scale c
    if dq is not None:
        dq.mul_(scale)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, align, block_size):
        tiling = _Tiling(q.size(-2), k.size(-2), align, mask, q.device)
        out, lse = _flash_forward(q, k, v, tiling, block_size)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.tiling, ctx.block_size = tiling, block_size
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        dq, dk, dv = _flash_backward(q, k, v, out, lse, dout, ctx.tiling, ctx.block_size, needs)
        cast = [None if g is None else g.to(t.dtype) for g, t in zip((dq, dk, dv), (q, k, v), strict=True)]
        return (*cast, None, None, None)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    causal: bool | str = False,
    block_size: int = 64,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Exact softmax(q k^T / sqrt(D) + M) v by the tiled online-softmax algorithm (see the module docstring).

    q: (B, H, Tq, D), k: (B, H, Tk, D), v: (B, H, Tk, Dv) (any leading dims, equal for q, k, v).
    mask: bool, True = attend, broadcastable to (B, H, Tq, Tk). causal: False, True / "top_left" (key j
    visible to query i iff j <= i), or "bottom_right" (j <= i + Tk - Tq, for a KV cache). Memory is
    O(block_size^2 + T) per (batch, head), in the forward and the backward pass. Returns (B, H, Tq, Dv) in
    q's dtype; a query with no visible key gets zeros. `dropout_p` is accepted for a common signature with
    the other attention functions, but only 0.0 is supported.
    """
    align = _resolve_causal(causal)
    if dropout_p != 0.0:
        raise NotImplementedError("flash_attention does not implement attention dropout; use dropout_p=0.0")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v need the same number (>= 2) of dims, got {q.dim()}, {k.dim()}, {v.dim()}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.size(-1) != k.size(-1):
        raise ValueError(
            f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            "(want q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv))"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise TypeError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if mask is not None:
        mask = _broadcast_mask(mask, (*q.shape[:-1], k.size(-2)))
    return _FlashAttention.apply(q, k, v, mask, align, block_size)
