"""Every render option defined once, the frozen RenderConfig built from flags, presets and recipes, and its
checks."""
