"""GPU workers: the discovery engine and the job runner (heavy: torch, transformer_lens).

Writes results through ``service``'s catalogue; ``service`` never imports this package.
"""
