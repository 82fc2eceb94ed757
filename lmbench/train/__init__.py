"""Pretraining with Lightning: the LightningModule, trainer construction and run outputs."""
