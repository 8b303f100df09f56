"""LoRA-family adapters and textual-inversion embeddings: inspect a file, patch a model with it.

Submodules keep torch out of import time: `header` and `inspection` read files without a model,
`deltas`, `adapter` and `patcher` hold the torch side.
"""
