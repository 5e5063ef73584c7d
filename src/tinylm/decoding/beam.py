"""Beam search with the exact semantics of `transformers` 5.x `generate(num_beams=K, do_sample=False)`.

State per batch item: K running beams with their raw cumulative log-probability s (the sum of
log_softmax(logits) in float32 over the generated tokens), and K slots of finished hypotheses with their
scores. At the first step only beam 0 is live (the others start at s = -1e9), so the K beams differ.
Each step, for each batch item:
  1. candidates: the top 2K of s(beam) + log p(token | beam) over all K x V (beam, token) pairs, best first;
  2. a candidate finishes if its token is EOS or the step is the last one (max_new_tokens: then every
     candidate finishes, i.e. the running beams are finalised);
  3. running beams: the best K candidates that did not finish (ranked by s, no length penalty);
  4. a finished candidate is admitted only if it ranks among the top K candidates (rank < K: the other K are
     spares so that K beams keep running), with score s / lp(L), L = generated length including EOS,
     lp(L) = L ** length_penalty (or GNMT's ((5 + L) / 6) ** length_penalty); it takes a slot if it beats
     the worst of the K finished scores (merge, keep the best K);
  5. done-ness: once every slot is filled and the best running beam cannot beat the worst finished score,
     the item is done and admits nothing more. "Cannot beat" is judged on the running beam's s / lp(L*):
       early_stopping=False:   L* = the current generated length (a heuristic when length_penalty > 0:
                               longer beams divide by more, so it can stop before the optimum);
       early_stopping="never": L* = max_new_tokens if length_penalty > 0 else the current length (exact:
                               canonical beam search);
       early_stopping=True:    as False, and besides the item is done as soon as its K slots are filled.
Search stops when every item is done (early_stopping=True: when all slots of all items are filled), at
max_new_tokens, or when all 2K candidates of every item end in EOS. Rejected candidates and spent beams are
masked with -1e9 exactly as `transformers` does, so results (ties included) match it.

Returns the num_return_sequences best finished hypotheses per item, best first: sequences (prompt + tokens,
padded with pad_token_id, default EOS, to the longest returned) and their scores.
Cost: about K x greedy decoding (K rows through the KV cache per step, the prompt's keys and values read
once for the K beams, rows reassigned after each step: `tinylm.nn.kv_cache`) plus a top-2K over K x V per
item.
"""

import torch

from tinylm.decoding.stepper import Stepper, check_positive_int

MASK = -1e9  # `transformers`' "impossible" score


@torch.inference_mode()
def beam_search(model, input_ids: torch.Tensor, num_beams: int, max_new_tokens: int,
                eos_token_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | str = False, attention_mask: torch.Tensor | None = None,
                num_return_sequences: int = 1, *,
                pad_token_id: int | None = None, length_penalty_type: str = "power",
                decoder_start_token_id: int | None = None, use_cache: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over left-padded prompts input_ids (B, T) -> (sequences (B * n, T + new), scores (B * n,)).

    n = num_return_sequences <= num_beams; rows b * n ... b * n + n - 1 are item b's best hypotheses.
    length_penalty_type: "power" (transformers: L ** a) or "gnmt" (Wu et al. 2016: (5 + L) ** a / 6 ** a).
    Encoder-decoder models: input_ids/attention_mask are the source; sequences start with
    decoder_start_token_id. num_beams=1 is a true one-beam search: transformers runs greedy search instead, which
    differs where early_stopping="never" with length_penalty > 0 lets the beam run past EOS.
    """
    check_positive_int("num_beams", num_beams)
    check_positive_int("num_return_sequences", num_return_sequences)
    if num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences={num_return_sequences} exceeds num_beams={num_beams}")
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if length_penalty_type == "power":
        def lp(length: int) -> float:
            return length ** length_penalty
    elif length_penalty_type == "gnmt":
        def lp(length: int) -> float:
            return ((5 + length) / 6) ** length_penalty
    else:
        raise ValueError(f"length_penalty_type must be 'power' or 'gnmt', got {length_penalty_type!r}")

    steps = Stepper(model, input_ids, attention_mask, max_new_tokens, decoder_start_token_id, use_cache)
    B, K, N, device = input_ids.size(0), num_beams, max_new_tokens, input_ids.device
    logits = steps.next_logits().repeat_interleave(K, dim=0)  # prefill once per item, then K rows per item
    steps.expand(K)
    V = logits.size(-1)
    fill = pad_token_id if pad_token_id is not None else eos_token_id if eos_token_id is not None else 0
    run_score = torch.full((B, K), MASK, device=device)  # the running beams' tokens live in steps.ids
    run_score[:, 0] = 0.0
    fin_seq = torch.full((B, K, N), fill, dtype=torch.long, device=device)
    fin_score = torch.full((B, K), MASK, device=device)
    fin_len = torch.zeros(B, K, dtype=torch.long, device=device)
    fin_done = torch.zeros(B, K, dtype=torch.bool, device=device)  # slot holds a finished hypothesis
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)  # item not done by the step-5 test
    in_top_k = torch.arange(2 * K, device=device) < K
    first_row = torch.arange(B, device=device)[:, None] * K
    for t in range(N):
        if t:
            logits = steps.next_logits()
        scores = (torch.log_softmax(logits, -1).view(B, K, V) + run_score[..., None]).view(B, K * V)
        cand_score, cand = scores.topk(2 * K)  # (B, 2K), best first
        cand_beam, cand_tok = cand // V, cand % V
        if t == N - 1:
            ends = torch.ones_like(cand_tok, dtype=torch.bool)
        else:
            ends = cand_tok == (eos_token_id if eos_token_id is not None else -1)

        live = cand_score + MASK * ends
        keep = live.topk(K).indices
        run_score, parent = live.gather(1, keep), cand_beam.gather(1, keep)

        admit = ends & in_top_k
        if bool(admit.any()):  # else no slot can change: every non-admitted score is <= MASK
            generated = steps.ids[:, steps.prompt_len:].view(B, K, N)
            cand_seq = generated.gather(1, cand_beam[..., None].expand(B, 2 * K, N))
            cand_seq[:, :, t] = cand_tok
            cand_seq[:, :, t + 1:] = fill
            full = fin_done.all(1, keepdim=True) & (early_stopping is True)
            new_score = cand_score / lp(t + 1) + MASK * full + MASK * ~improvable + MASK * ~admit
            merged = torch.cat([fin_score, new_score], 1)
            best = merged.topk(K).indices
            fin_score = merged.gather(1, best)
            fin_seq = torch.cat([fin_seq, cand_seq], 1).gather(1, best[..., None].expand(B, K, N))
            fin_len = torch.cat([fin_len, torch.full_like(cand_tok, t + 1)], 1).gather(1, best)
            fin_done = torch.cat([fin_done, admit], 1).gather(1, best)

        best_len = N if early_stopping == "never" and length_penalty > 0 else t + 1
        worst = torch.where(fin_done, fin_score.min(1, keepdim=True).values, MASK)
        improvable &= (run_score[:, :1] / lp(best_len) > worst).any(1, keepdim=True)
        all_full = early_stopping is True and bool(fin_done.all())
        if not bool(improvable.any()) or all_full or bool(ends.all()):
            break
        steps.reorder((first_row + parent).view(-1))
        steps.append(cand_tok.gather(1, keep).view(-1))

    n = num_return_sequences
    width = int(fin_len[:, :n].max())
    prompt = steps.output()[::K, :steps.prompt_len].repeat_interleave(n, dim=0)
    sequences = torch.cat([prompt, fin_seq[:, :n, :width].reshape(B * n, width)], dim=1)
    return sequences, fin_score[:, :n].reshape(B * n)
