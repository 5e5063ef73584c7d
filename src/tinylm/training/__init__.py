"""Training: losses (plain PyTorch), optimisers and schedules, LightningModules and DataModules."""
