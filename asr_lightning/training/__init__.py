"""The Lightning shell on top of the pure layers: the LightningModule, the LightningDataModule,
their callbacks and the LightningCLI that ``asr-lightning fit|validate|test|predict`` runs."""
