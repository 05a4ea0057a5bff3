"""Training with Lightning: configs, the data module over the store, the LightningModule, the run."""
