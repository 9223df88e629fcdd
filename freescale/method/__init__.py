"""The FreeScale method on one rank's row bands: the cascade, scale-fusion attention, blur, FreeU,
dilation, the band-wise VAE."""
