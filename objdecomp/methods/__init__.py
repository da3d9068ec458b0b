"""One LightningModule per paper and baseline."""
