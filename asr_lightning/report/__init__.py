"""The evaluation report: a test run's per-utterance predictions as one self-contained HTML page
(:func:`~asr_lightning.report.build.write_report`)."""
