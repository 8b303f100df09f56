"""`/lora`, `/embedding` and `/hypernetwork`: the libraries' commands, views and embeds."""
