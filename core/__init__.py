"""rigdeck's UI-free library: telemetry, model fitting, local runs and (later) cloud jobs.

Nothing in here imports Textual or prints; a test enforces it.
"""
