"""One LightningDataModule per benchmark (contract 1 in DESIGN.md)."""
