"""Reproduce He et al. 2015 (Deep Residual Learning) and 2016 (Identity Mappings)."""
