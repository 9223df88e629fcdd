"""An offline byte-level CLIP tokenizer for the built-in tiny model: a real CLIPTokenizer with no merges,
so every word is spelled out as its UTF-8 bytes and no vocabulary file ever has to be downloaded."""

from transformers import CLIPTokenizer

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
WORD_END = "</w>"

# 256 single bytes + the same 256 with the end-of-word suffix + start and end tokens.
BYTE_VOCAB_SIZE = 2 * 256 + 2


def byte_to_unicode_table() -> dict[int, str]:
    """The reversible byte -> printable character table that byte-level BPE (CLIP, GPT-2) is defined on.

    Printable Latin-1 bytes stand for themselves; the remaining bytes (controls, space, ...) are moved to
    code points 256 and up, in byte order, so no byte maps to whitespace or a control character.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1))
        + list(range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # Keep CLIP's vocabulary order: the printable bytes first, then the remapped ones.
    return {b: table[b] for b in printable + [b for b in range(256) if b not in printable]}


def byte_vocab() -> dict[str, int]:
    """Token -> id for the byte vocabulary, in the same order as the first entries of CLIP's own vocab."""
    chars = list(byte_to_unicode_table().values())
    tokens = chars + [c + WORD_END for c in chars] + [START_TOKEN, END_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}


def build_byte_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer over the byte vocabulary with an empty merge list; built in memory, never online.

    The start token has id 512 and the end token (also the padding token, as in SDXL's first tokenizer)
    has id 513; text encoders paired with it must use those ids as bos/eos.
    """
    return CLIPTokenizer(
        vocab=byte_vocab(),
        merges=[],
        unk_token=END_TOKEN,
        bos_token=START_TOKEN,
        eos_token=END_TOKEN,
        pad_token=END_TOKEN,
        model_max_length=max_length,
    )
