"""What runs in the GPU container: generation, energy metering and scoring. Never imports kopf."""
