"""Corpora, tokenizers, preparation to token files, and the batch loader (see docs/data.md).

    from gptlab.data import DataConfig, prepare, load_meta, get_tokenizer, BatchLoader
    from gptlab.data import check_token_ids   # ids read from a token file: one line when one is outside the vocabulary

``BatchLoader`` is imported on first use, so ``python -m data`` does not pay for importing torch.
"""

from .build import find_prepared, load_meta, prepare
from .config import DataConfig
from .integrity import check_token_ids
from .tokenizers import get_tokenizer

__all__ = [
    "BatchLoader",
    "DataConfig",
    "check_token_ids",
    "find_prepared",
    "get_tokenizer",
    "load_meta",
    "prepare",
]


def __getattr__(name: str):
    if name == "BatchLoader":
        from .loader import BatchLoader

        return BatchLoader
    raise AttributeError(f"module 'data' has no attribute {name!r}")
