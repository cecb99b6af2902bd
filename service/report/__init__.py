"""Pictures of circuits built from the catalogue (no torch): diagrams, heatmaps, curves, HTML reports."""
