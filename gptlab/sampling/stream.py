"""Streaming text out of token ids: ``StreamDecoder`` prints only complete characters."""

from __future__ import annotations

import codecs


class StreamDecoder:
    """Turn token ids, pushed a few at a time, into text that is safe to print as it comes.

    A byte-level BPE token (gpt2) can end inside a multi-byte UTF-8 character; printing its decode at once
    would show a replacement character. With a tokenizer that exposes `decode_bytes`, bytes go through an
    incremental UTF-8 decoder that only releases complete characters. Otherwise the not-yet-printed tokens
    are decoded together and held back while their text ends in U+FFFD (at most `max_hold` tokens).
    """

    def __init__(self, tokenizer, max_hold: int = 8):
        self.tokenizer = tokenizer
        self.max_hold = max_hold
        # tiktoken's Encoding has decode_bytes; the data package's wrapper keeps it as `.enc`
        self._decode_bytes = getattr(tokenizer, "decode_bytes", None) or getattr(
            getattr(tokenizer, "enc", None), "decode_bytes", None
        )
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[int] = []

    def push(self, ids: list[int]) -> str:
        """Add tokens; return the new complete text (possibly empty)."""
        if self._decode_bytes is not None:
            return self._utf8.decode(self._decode_bytes(list(ids)))
        self._pending.extend(ids)
        text = self.tokenizer.decode(self._pending)
        if text.endswith("\ufffd") and len(self._pending) < self.max_hold:
            return ""
        self._pending = []
        return text

    def flush(self) -> str:
        """Whatever is still held back, decoded as is."""
        if self._decode_bytes is not None:
            return self._utf8.decode(b"", final=True)
        text = self.tokenizer.decode(self._pending) if self._pending else ""
        self._pending = []
        return text
