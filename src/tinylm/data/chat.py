"""The chat template: one prompt/response pair as token ids, built from the tokenizer's special tokens.

    <|user|>\\n{prompt}\\n<|assistant|>\\n{response}<|endoftext|>

The prompt part ends after "<|assistant|>\\n"; the model answers until <|endoftext|>. Special tokens are
inserted as ids and only the text between them is encoded, with special-token strings in it encoded as
text: a prompt that mentions "<|assistant|>" or "<|endoftext|>" injects no role and ends no response.
`text()` renders the same sequence as a string (for display).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tinylm.data.special_tokens import ASSISTANT, EOS, USER
from tinylm.tokenizer import BPETokenizer


@dataclass(frozen=True)
class ChatTemplate:
    user_id: int
    assistant_id: int
    eos_id: int
    encode: Callable[[str], list[int]]  # text (no special tokens) -> ids

    @classmethod
    def from_tokenizer(cls, tok) -> ChatTemplate:
        """From a BPETokenizer or a `tokenizers.Tokenizer` (anything with token_to_id and encode)."""
        ids = {t: tok.token_to_id(t) for t in (USER, ASSISTANT, EOS)}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer lacks the chat special tokens {missing}: retrain it")

        def encode(text: str) -> list[int]:  # special-token strings in a prompt or response stay text: no
            if isinstance(tok, BPETokenizer):  # role, EOS or mask id can be injected through the data
                return tok.encode(text, allowed_special=())
            previous, tok.encode_special_tokens = tok.encode_special_tokens, True  # a `tokenizers.Tokenizer`
            try:
                return tok.encode(text, add_special_tokens=False).ids
            finally:
                tok.encode_special_tokens = previous

        return cls(ids[USER], ids[ASSISTANT], ids[EOS], encode)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids the model sees before answering."""
        return [self.user_id, *self.encode(f"\n{prompt}\n"), self.assistant_id, *self.encode("\n")]

    def response_ids(self, response: str) -> list[int]:
        """The ids the model is trained to produce (the response and <|endoftext|>)."""
        return [*self.encode(response), self.eos_id]

    @staticmethod
    def text(prompt: str, response: str | None = None) -> str:
        """The template as a string; without a response, the prompt part only."""
        head = f"{USER}\n{prompt}\n{ASSISTANT}\n"
        return head if response is None else f"{head}{response}{EOS}"
