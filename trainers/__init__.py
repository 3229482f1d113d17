"""What one trial does: data, augmentation, networks, memory bank, samplers, losses, evaluation, the fit loop. No Ray."""
