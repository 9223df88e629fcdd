"""Files a render writes: images fed strip by strip (PNG, TIFF, JPEG), their recipes, checkpoint
directories."""
