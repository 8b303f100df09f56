"""Turn a trusted pickle (`.pt`, `.pth`, `.ckpt`, `.bin`) into `.safetensors`, on the host only.

`scan` reads the pickle's opcodes without running them and refuses any import weights do not
need; `sandbox` then loads it in a child process (`child`) under memory and time limits, where
`layouts` recognises what it is and writes it in the layout Dreamcord's loaders read. Uploads
from Discord never reach this package: it serves the `dreamcord convert` command only.
"""
