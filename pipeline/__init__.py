"""The generation domain: requests, the prompt language, the queue and the SD1.5 engine.

Nothing here knows about Discord or SQL. Only the engine modules import torch, and only when a
model is really used.
"""
