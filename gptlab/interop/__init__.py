"""Interop with the Hugging Face and TransformerLens ecosystems (see docs/interop.md).

    interop.hf_config   Hugging Face config <-> GPTConfig (which architectures map exactly; one line otherwise)
    interop.hf_weights  state dicts both ways (pure torch: names, transposes, fused QKV, tied heads)
    interop.hf_tokenizer our tokenizers as Hugging Face tokenizer.json files, and the reverse
    interop.hf_model    a GPT's exact HF twin in memory, and the probe both hf and tl check against
    interop.hf          load an HF directory or hub id as a run; export a run as an HF directory
    interop.tl          a run as a TransformerLens model (TransformerBridge)

Sits above ``model`` and ``data`` and below the tools. ``transformers``, ``safetensors``, ``huggingface_hub``
and ``transformer_lens`` (the ``hf`` extra) are imported inside the functions that use them, so importing
this package costs nothing and ``python train.py`` never loads them.
"""
