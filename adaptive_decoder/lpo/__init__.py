"""LPO: collect samples with the head's latent choices, pair them by reward, train the head."""
