"""BraTS-like phantom cases from the ICBM152 templates: geometry, anatomy, contrasts, sets."""
