"""The world model: encoders -> latent world state -> multimodal latent rollout (plain nn.Modules)."""
