"""The model core: wavelet transform, U-Net denoiser, diffusion schedule and reverse steps, samplers,
checkpoint loading. It knows nothing of files, data folders, commands or the CLI."""
