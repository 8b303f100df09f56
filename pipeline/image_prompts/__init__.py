"""Image prompts: the IP-Adapter and its CLIP image encoder, checked, loaded and applied."""
