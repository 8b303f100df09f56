"""The adapter cache keeps recent adapters within its byte bound and finds them by content."""

from __future__ import annotations

import shutil

from pipeline.lora.adapter import load_adapter
from pipeline.lora.cache import AdapterCache
from pipeline.tiny import TINY_WIDTH


def test_renamed_copy_is_a_hit(tiny_files, tmp_path):
    cache = AdapterCache(max_bytes=10**8)
    first = cache.load(tiny_files["lora"], model_width=TINY_WIDTH)
    copy = shutil.copy(tiny_files["lora"], tmp_path / "renamed.safetensors")
    assert cache.load(copy, model_width=TINY_WIDTH) is first
    assert cache.get(first.sha256) is first


def test_least_recently_used_adapter_goes_first_past_the_bound(tiny_files):
    adapters = [load_adapter(tiny_files[k], TINY_WIDTH) for k in ("lora", "loha", "lokr")]
    cache = AdapterCache(max_bytes=adapters[0].nbytes + adapters[1].nbytes + adapters[2].nbytes - 1)
    cache.put(adapters[0])
    cache.put(adapters[1])
    assert cache.get(adapters[0].sha256) is adapters[0]  # now adapters[1] is the oldest use
    cache.put(adapters[2])
    assert cache.get(adapters[1].sha256) is None
    assert cache.get(adapters[0].sha256) is adapters[0]
    assert cache.nbytes <= cache.max_bytes and len(cache) == 2


def test_adapter_bigger_than_the_bound_is_not_kept(tiny_files):
    cache = AdapterCache(max_bytes=10)
    adapter = cache.load(tiny_files["lora"], model_width=TINY_WIDTH)
    assert adapter.modules
    assert len(cache) == 0
