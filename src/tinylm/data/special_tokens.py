"""The special tokens of the one tokenizer all tinylm models share; they get ids 0..7 in this order."""

EOS = "<|endoftext|>"  # document separator and end of a chat response
PAD = "<|pad|>"
SYSTEM = "<|system|>"  # chat roles (see tinylm.data.chat)
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
CLS = "[CLS]"  # BERT: sequence start (classification), separator, masked-LM target
SEP = "[SEP]"
MASK = "[MASK]"

SPECIAL_TOKENS = (EOS, PAD, SYSTEM, USER, ASSISTANT, CLS, SEP, MASK)
