"""The kopf operator and the search engine. Never imports torch, diffusers or transformers."""
