"""The library: checkpoints, VAEs and add-ons (LoRA, embeddings, ControlNet, upscalers), where
they are registered, checked and chosen."""
