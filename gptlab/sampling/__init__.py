"""Generating text from a run: the library behind sample.py (docs/sampling.md).

options   Options and parse_options: every sample.py option checked and typed
prompt    read_prompt (option, file, stdin), default_prompt (the run's), encode_prompt (checked ids)
stream    StreamDecoder: token ids to text that never ends inside a character
batch     generate: one batch of samples with end-of-text; the memory check; the closing line
api       sample(opts): load the run, generate, print the text and the closing line

The KV-cache rule is the model's (``GPT.cache_capacity``, model/generate.py).
"""

from .api import sample
from .batch import Generation, generate
from .options import Options, parse_options
from .stream import StreamDecoder

__all__ = ["Generation", "Options", "StreamDecoder", "generate", "parse_options", "sample"]
